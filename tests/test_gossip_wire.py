"""iroh-gossip wire codec: known answers assembled from spec §10.2 layouts, round trips, fuzzing."""

from __future__ import annotations

import struct

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.base.keys import PublicKey, SecretKey
from irohpy.errors import GossipError, IrohError
from irohpy.protocols.gossip.wire import (
    ALPN,
    DEFAULT_MAX_MESSAGE_SIZE,
    Disconnect,
    ForwardJoin,
    FrameDecoder,
    Gossip,
    Graft,
    IHave,
    Join,
    Message,
    Neighbor,
    PeerInfo,
    Priority,
    Prune,
    Shuffle,
    ShuffleReply,
    decode_header,
    decode_message,
    encode_frame,
    encode_header,
    encode_message,
)

K1 = SecretKey.from_bytes(bytes([1]) * 32).public()
K2 = SecretKey.from_bytes(bytes([2]) * 32).public()
ID = bytes(range(32))
HELLO_ID = bytes.fromhex("ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f")

# Expected bodies built field by field: outer variant, inner variant, then fields in order.
KNOWN: list[tuple[Message[PublicKey], bytes]] = [
    (Join(None), b"\x00" + b"\x00" + b"\x00"),
    (Join(b"ab"), b"\x00" + b"\x00" + b"\x01" + b"\x02ab"),
    (
        ForwardJoin(PeerInfo(K1, None), 6),
        b"\x00" + b"\x01" + K1.to_bytes() + b"\x00" + b"\x06",
    ),
    (
        ForwardJoin(PeerInfo(K1, b""), 300),
        b"\x00" + b"\x01" + K1.to_bytes() + b"\x01\x00" + b"\xac\x02",
    ),
    (
        Shuffle(K1, (PeerInfo(K2, None), PeerInfo(K1, b"x")), 6),
        b"\x00\x02" + K1.to_bytes() + b"\x02" + K2.to_bytes() + b"\x00" + K1.to_bytes() + b"\x01\x01x" + b"\x06",
    ),
    (ShuffleReply(()), b"\x00\x03\x00"),
    (ShuffleReply((PeerInfo(K2, None),)), b"\x00\x03\x01" + K2.to_bytes() + b"\x00"),
    (Neighbor(Priority.HIGH, None), b"\x00\x04\x00\x00"),
    (Neighbor(Priority.LOW, b"d"), b"\x00\x04\x01\x01\x01d"),
    (Disconnect(alive=True), b"\x00\x05\x01\x00"),
    (Disconnect(alive=False, respond=True), b"\x00\x05\x00\x01"),
    (Gossip(HELLO_ID, b"hello", 0), b"\x01\x00" + HELLO_ID + b"\x05hello" + b"\x00\x00"),
    (Gossip(ID, b"", None), b"\x01\x00" + ID + b"\x00" + b"\x01"),
    (Gossip(ID, b"z", 128), b"\x01\x00" + ID + b"\x01z" + b"\x00\x80\x01"),
    (Prune(), b"\x01\x01"),
    (Graft(None, 3), b"\x01\x02\x00\x03"),
    (Graft(ID, 0), b"\x01\x02\x01" + ID + b"\x00"),
    (IHave(()), b"\x01\x03\x00"),
    (IHave(((ID, 1), (HELLO_ID, 2))), b"\x01\x03\x02" + ID + b"\x01" + HELLO_ID + b"\x02"),
]


@pytest.mark.parametrize(("msg", "body"), KNOWN)
def test_known_answers(msg: Message[PublicKey], body: bytes) -> None:
    assert encode_message(msg) == body
    assert decode_message(body) == msg


def test_spec_example_frames() -> None:
    assert ALPN == b"/iroh-gossip/1"
    assert blake3.blake3(b"hello").digest() == HELLO_ID
    full = encode_frame(encode_message(Gossip(HELLO_ID, b"hello", 0)))
    assert full.hex() == "0000002a0100" + HELLO_ID.hex() + "0568656c6c6f0000"
    assert encode_frame(encode_message(Join(None))).hex() == "00000003000000"
    assert encode_frame(encode_message(Prune())).hex() == "000000020101"
    topic = bytes([7]) * 32
    assert encode_header(topic) == b"\x00\x00\x00\x20" + topic
    assert decode_header(FrameDecoder().feed(encode_header(topic))[0]) == topic


@pytest.mark.parametrize(
    "body",
    [
        b"\x02\x00",  # topic::Message variant 2
        b"\x00\x06",  # hyparview variant 6
        b"\x01\x04",  # plumtree variant 4
        b"\x00\x04\x02\x00",  # Priority variant 2
        b"\x01\x00" + ID + b"\x00\x02",  # DeliveryScope variant 2
        b"\x00\x05\x02\x00",  # bool byte 2
        b"\x00\x00\x02",  # option tag 2
        b"\x01\x01\x00",  # trailing byte
        b"\x01\x02\x01" + ID[:5],  # truncated
        b"\x00\x01" + bytes(32) + b"\x00\x00",  # invalid (small-order) key
        b"\x01\x02\x00\x80\x80\x04",  # u16 overflow
        b"",
    ],
)
def test_bad_bodies_rejected(body: bytes) -> None:
    with pytest.raises(GossipError):
        decode_message(body)


def test_oversize_rejected_on_both_sides() -> None:
    big = encode_message(Gossip(ID, bytes(DEFAULT_MAX_MESSAGE_SIZE), 0))
    with pytest.raises(GossipError, match="limit"):
        encode_frame(big)
    with pytest.raises(GossipError):
        encode_frame(bytes(DEFAULT_MAX_MESSAGE_SIZE))
    assert len(encode_frame(bytes(DEFAULT_MAX_MESSAGE_SIZE - 1))) == DEFAULT_MAX_MESSAGE_SIZE + 3
    dec = FrameDecoder()
    assert dec.feed(struct.pack(">I", DEFAULT_MAX_MESSAGE_SIZE) + bytes(10)) == []
    with pytest.raises(GossipError):
        FrameDecoder().feed(struct.pack(">I", DEFAULT_MAX_MESSAGE_SIZE + 1))
    with pytest.raises(GossipError):
        FrameDecoder(max_message_size=512).feed(struct.pack(">I", 513))


def test_frame_decoder_reassembles_split_input() -> None:
    frames = b"".join(encode_frame(encode_message(m)) for m, _ in KNOWN)
    dec = FrameDecoder()
    out: list[bytes] = []
    for i in range(0, len(frames), 7):
        out += dec.feed(frames[i : i + 7])
    assert [decode_message(b) for b in out] == [m for m, _ in KNOWN]
    assert dec.pending == 0
    dec.feed(b"\x00\x00")
    assert dec.pending == 2


def test_header_must_be_32_bytes() -> None:
    with pytest.raises(GossipError):
        decode_header(bytes(31))
    with pytest.raises(ValueError):
        encode_header(bytes(33))


KEYS = [K1, K2]
u16 = st.integers(0, 0xFFFF)
opt_data = st.none() | st.binary(max_size=20)
peer_info = st.builds(PeerInfo, st.sampled_from(KEYS), opt_data)
ids = st.binary(min_size=32, max_size=32)
messages = st.one_of(
    st.builds(Join, opt_data),
    st.builds(ForwardJoin, peer_info, u16),
    st.builds(Shuffle, st.sampled_from(KEYS), st.lists(peer_info, max_size=8).map(tuple), u16),
    st.builds(ShuffleReply, st.lists(peer_info, max_size=8).map(tuple)),
    st.builds(Neighbor, st.sampled_from(Priority), opt_data),
    st.builds(Disconnect, st.booleans(), st.booleans()),
    st.builds(Gossip, ids, st.binary(max_size=64), st.none() | u16),
    st.just(Prune()),
    st.builds(Graft, st.none() | ids, u16),
    st.builds(IHave, st.lists(st.tuples(ids, u16), max_size=5).map(tuple)),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(msg: Message[PublicKey]) -> None:
    body = encode_message(msg)
    assert decode_message(body) == msg
    assert FrameDecoder().feed(encode_frame(body)) == [body]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | messages.map(encode_message).flatmap(lambda b: st.binary(max_size=len(b) + 4).map(lambda x: b[: len(x)] + x)))
def test_decoder_raises_only_iroh_errors(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except IrohError:
        return
    assert encode_message(msg) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(512, 5000))
def test_frame_decoder_fuzz(data: bytes, limit: int) -> None:
    try:
        for body in FrameDecoder(limit).feed(data):
            assert len(body) <= limit
    except IrohError:
        pass
