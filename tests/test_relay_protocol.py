"""The relay wire protocol against the upstream and computed vectors (iroh-wire.md §4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy import SecretKey
from irohpy.errors import IrohError, RelayProtocolError
from irohpy.relay import protocol as p

SECRET = SecretKey.from_bytes(b"\x2a" * 32)
PUB = SECRET.public()
PUB_HEX = "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"


def test_public_key_vector() -> None:
    assert str(PUB) == PUB_HEX


@pytest.mark.parametrize(
    ("frame", "hex_"),
    [
        (p.Ping(b"\x2a" * 8), "09" + "2a" * 8),
        (p.Pong(b"\x2a" * 8), "0a" + "2a" * 8),
        (p.RelayToClient(PUB, 3, b"Hello World!"), "06" + PUB_HEX + "03" + b"Hello World!".hex()),
        (p.RelayToClient(PUB, 3, b"Hello World!", 6), "07" + PUB_HEX + "03" + "0006" + b"Hello World!".hex()),
        (p.EndpointGone(PUB), "08" + PUB_HEX),
        (p.Restarting(10, 20), "0c0000000a00000014"),
        (p.StatusFrame(1), "0d01"),
        (p.StatusFrame(2), "0d02"),
        (p.ServerDeniesAuth("signature invalid"), "0311" + b"signature invalid".hex()),
        (p.ServerChallenge(bytes(range(16))), "00" + bytes(range(16)).hex()),
        (p.ServerConfirmsAuth(), "02"),
    ],
)
def test_frame_vectors_roundtrip(frame: p.Frame, hex_: str) -> None:
    assert p.encode(frame).hex() == hex_
    assert p.decode(bytes.fromhex(hex_)) == frame


def test_health_is_v1_only() -> None:
    msg = bytes.fromhex("0b48656c6c6f3f20596573207468697320697320646f672e")
    assert p.decode(msg, version=1) == p.Health("Hello? Yes this is dog.")
    with pytest.raises(RelayProtocolError):
        p.decode(msg, version=2)


def test_challenge_vector() -> None:
    challenge = p.ServerChallenge(bytes(range(16)))
    assert p.challenge_message(challenge.challenge).hex() == (
        "b7b16e505d2cb5dbaf494800092c3b05a6c45d8d3fd4f1b888c6a77240b876c0"
    )
    auth = p.answer_challenge(SECRET, challenge)
    assert bytes(auth.signature).hex() == (
        "a28b5ebc6a930b5d80ad5aca2a8e48ad4a064e699c0866674c8b8e61a5f4ea94"
        "0ee8b9f06732930250ac0735555abe77e8df740165edc3163be432f0e4f3cf0f"
    )
    encoded = p.encode(auth)
    assert len(encoded) == 98 and encoded[:33] == b"\x01" + bytes(PUB) and encoded[33] == 0x40
    assert p.decode(encoded) == auth
    assert p.verify_client_auth(challenge, auth)
    assert not p.verify_client_auth(p.ServerChallenge(b"\x00" * 16), auth)


def test_batch_splits_like_gso() -> None:
    frame = p.ClientToRelay(PUB, 0, b"aaabbbc", 3)
    assert frame.datagrams() == [b"aaa", b"bbb", b"c"]
    assert p.decode(p.encode(frame)) == frame


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x3f",  # unknown type
        b"\x40\x00",  # two-byte varint type: not one we know
        b"\x09\x00",  # short ping
        b"\x00" + b"\x01" * 15,  # short challenge
        b"\x01" + bytes(PUB) + b"\x41" + b"\x00" * 64,  # wrong signature prefix
        b"\x04" + bytes(PUB) + b"\x00",  # datagram frame without a datagram
        b"\x04" + bytes(PUB)[:10],  # truncated
        b"\x04" + bytes(PUB) + b"\x09" + b"x",  # bad ECN
        b"\x05" + bytes(PUB) + b"\x00\x00\x00" + b"x",  # segment size 0
        b"\x08" + bytes(PUB) + b"\x00",  # EndpointGone with trailing byte
        b"\x04" + b"\xff" * 32 + b"\x00x",  # not a valid key
        b"\x03\x05ab",  # truncated deny reason
        b"\x04" + bytes(PUB) + b"\x00" + b"x" * (70 * 1024),  # oversized
    ],
)
def test_garbage_is_a_protocol_error(bad: bytes) -> None:
    with pytest.raises(RelayProtocolError):
        p.decode(bad)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decode_only_raises_iroh_errors(data: bytes) -> None:
    try:
        frame = p.decode(data)
    except IrohError:
        return
    assert p.decode(p.encode(frame)) == frame


def test_subprotocol_negotiation() -> None:
    assert p.negotiate_subprotocol("iroh-relay-v2, iroh-relay-v1") == "iroh-relay-v2"
    assert p.negotiate_subprotocol("iroh-relay-v1") == "iroh-relay-v1"
    assert p.negotiate_subprotocol("chat, superchat") is None
