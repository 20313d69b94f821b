"""irohpy.quic.crypto and packet protection: RFC 9001 Appendix A byte for byte, and aioquic's
own implementation as an independent check of every cipher suite and of key updates."""

from __future__ import annotations

import os

import pytest
from aioquic.quic.crypto import CryptoContext, CryptoPair, next_key_phase
from aioquic.tls import CipherSuite
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import QuicDecryptError, QuicError
from irohpy.quic import crypto, packet
from irohpy.quic.crypto import (
    AES_128_GCM_SHA256,
    AES_256_GCM_SHA384,
    CHACHA20_POLY1305_SHA256,
    HeaderProtection,
    OneRttKeys,
    PacketKey,
    Protection,
)
from tests import quic_vectors as v

SUITES = [AES_128_GCM_SHA256, AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256]


def test_initial_secrets_and_keys_match_rfc9001_a1() -> None:
    client, server = crypto.initial_secrets(v.DCID)
    assert client == v.CLIENT_INITIAL_SECRET
    assert server == v.SERVER_INITIAL_SECRET
    for secret, key, iv, hp in (
        (client, v.CLIENT_KEY, v.CLIENT_IV, v.CLIENT_HP),
        (server, v.SERVER_KEY, v.SERVER_IV, v.SERVER_HP),
    ):
        assert crypto.hkdf_expand_label(secret, b"quic key", b"", 16) == key
        assert crypto.hkdf_expand_label(secret, b"quic iv", b"", 12) == iv
        assert crypto.hkdf_expand_label(secret, b"quic hp", b"", 16) == hp


def test_client_initial_matches_rfc9001_a2() -> None:
    send, _ = crypto.initial_protection(v.DCID, is_client=True)
    sealed = packet.seal_packet(send.key, send.hp, v.CLIENT_HEADER, v.CLIENT_PAYLOAD, v.CLIENT_PN)
    assert bytes(sealed) == v.CLIENT_PACKET

    _, server_recv = crypto.initial_protection(v.DCID, is_client=False)
    packets = packet.split_datagram(v.CLIENT_PACKET, 8)
    assert len(packets) == 1 and packets[0].packet_type == packet.PACKET_INITIAL
    packet.unprotect_headers(packets, server_recv.hp, -1)
    assert packets[0].packet_number == v.CLIENT_PN
    assert packets[0].header == v.CLIENT_HEADER
    assert packet.open_packet(server_recv.key, packets[0]) == v.CLIENT_PAYLOAD


def test_server_initial_matches_rfc9001_a3() -> None:
    send, _ = crypto.initial_protection(v.DCID, is_client=False)
    sealed = packet.seal_packet(send.key, send.hp, v.SERVER_HEADER, v.SERVER_PAYLOAD, v.SERVER_PN)
    assert bytes(sealed) == v.SERVER_PACKET

    _, client_recv = crypto.initial_protection(v.DCID, is_client=True)
    packets = packet.split_datagram(v.SERVER_PACKET, 8)
    packet.unprotect_headers(packets, client_recv.hp, 0)
    assert packets[0].packet_number == v.SERVER_PN
    assert packet.open_packet(client_recv.key, packets[0]) == v.SERVER_PAYLOAD


def test_retry_matches_rfc9001_a4() -> None:
    scid = bytes.fromhex("f067a5502a4262b5")
    assert packet.build_retry(b"", scid, v.DCID, b"token", unused=0x0F) == v.RETRY_PACKET
    retry = packet.split_datagram(v.RETRY_PACKET, 0)[0]
    assert retry.packet_type == packet.PACKET_RETRY and retry.token == b"token" and retry.scid == scid
    assert packet.verify_retry(retry, v.DCID)
    assert not packet.verify_retry(retry, bytes(8))


def test_chacha20_short_header_matches_rfc9001_a5() -> None:
    assert crypto.hkdf_expand_label(v.CHACHA_SECRET, b"quic key", b"", 32) == v.CHACHA_KEY
    assert crypto.hkdf_expand_label(v.CHACHA_SECRET, b"quic iv", b"", 12) == v.CHACHA_IV
    assert crypto.hkdf_expand_label(v.CHACHA_SECRET, b"quic hp", b"", 32) == v.CHACHA_HP
    assert crypto.next_secret(CHACHA20_POLY1305_SHA256, v.CHACHA_SECRET) == v.CHACHA_KU
    prot = Protection(CHACHA20_POLY1305_SHA256, v.CHACHA_SECRET)
    sealed = packet.seal_packet(prot.key, prot.hp, v.CHACHA_HEADER, v.CHACHA_PAYLOAD, v.CHACHA_PN)
    assert bytes(sealed) == v.CHACHA_PACKET
    packets = packet.split_datagram(v.CHACHA_PACKET, 0)
    packet.unprotect_headers(packets, prot.hp, v.CHACHA_PN - 1)
    assert packets[0].packet_number == v.CHACHA_PN
    assert packet.open_packet(prot.key, packets[0]) == v.CHACHA_PAYLOAD


def _aioquic_context(suite: int, secret: bytes) -> CryptoContext:
    ctx = CryptoContext()
    ctx.setup(cipher_suite=CipherSuite(suite), secret=secret, version=packet.VERSION_1)
    return ctx


@pytest.mark.parametrize("suite", SUITES)
def test_protection_agrees_with_aioquic(suite: int) -> None:
    secret = os.urandom(48 if suite == AES_256_GCM_SHA384 else 32)
    ours = Protection(suite, secret)
    theirs = _aioquic_context(suite, secret)
    dcid = os.urandom(8)
    for pn, payload_size in ((0, 3), (1, 3), (77, 1200), (70_000, 1400), (2**30 + 5, 50)):
        pn_length = packet.packet_number_length(pn, pn - 3 if pn >= 3 else -1)
        header = packet.build_short_header(dcid, pn, pn_length, key_phase=0)
        payload = os.urandom(payload_size)
        sealed = bytes(packet.seal_packet(ours.key, ours.hp, header, payload, pn))
        assert sealed == theirs.encrypt_packet(header, payload, pn)
        plain_header, plain, number, _ = theirs.decrypt_packet(sealed, len(header) - pn_length, max(pn - 1, 0))
        assert (plain_header, plain, number) == (header, payload, pn)


@pytest.mark.parametrize("suite", SUITES)
def test_key_update_agrees_with_aioquic(suite: int) -> None:
    size = 48 if suite == AES_256_GCM_SHA384 else 32
    client_secret, server_secret = os.urandom(size), os.urandom(size)
    theirs = _aioquic_context(suite, client_secret)
    theirs_next = next_key_phase(theirs)
    ours = PacketKey(suite, client_secret).next_generation()
    header = packet.build_short_header(b"abcdefgh", 9, 2, key_phase=1)
    payload = os.urandom(100)
    assert ours.seal(header, payload, 9) == theirs_next.aead.encrypt(payload, header, 9)

    server = OneRttKeys(suite, server_secret, client_secret)
    client = OneRttKeys(suite, client_secret, server_secret)
    # Client initiates; the server follows when the first packet of the new phase opens.
    old = packet.build_short_header(b"abcdefgh", 1, 2, key_phase=client.key_phase)
    ct_old = client.seal(old, b"old phase", 1)
    client.update()
    new = packet.build_short_header(b"abcdefgh", 2, 2, key_phase=client.key_phase)
    ct_new = client.seal(new, b"new phase", 2)
    assert server.open(new, ct_new, 2, client.key_phase) == b"new phase"
    assert server.key_phase == client.key_phase == 1
    # A late packet of the old phase still opens with the previous key.
    assert server.open(old, ct_old, 1, 0) == b"old phase"
    # The server now sends in the new phase and the client opens it with its current key.
    reply = packet.build_short_header(b"abcdefgh", 0, 1, key_phase=server.key_phase)
    assert client.open(reply, server.seal(reply, b"reply", 0), 0, 1) == b"reply"
    server.discard_previous()
    with pytest.raises(QuicDecryptError):
        server.open(old, ct_old, 1, 0)


def test_one_rtt_keys_follow_aioquic_key_update() -> None:
    pair_client, pair_server = CryptoPair(), CryptoPair()
    cs, ss = os.urandom(32), os.urandom(32)
    for ctx, secret in ((pair_client.send, cs), (pair_client.recv, ss), (pair_server.send, ss), (pair_server.recv, cs)):
        ctx.setup(cipher_suite=CipherSuite.AES_128_GCM_SHA256, secret=secret, version=1)
    ours = OneRttKeys(AES_128_GCM_SHA256, ss, cs)  # the server's view
    pair_client.update_key()
    dcid = b"\x01" * 8
    for pn in range(3):
        header = packet.build_short_header(dcid, pn, 2, key_phase=pair_client.key_phase)
        datagram = pair_client.encrypt_packet(header, b"x" * 40, pn)
        [parsed] = packet.split_datagram(datagram, 8)
        packet.unprotect_headers([parsed], ours.recv_hp, pn - 1)
        assert parsed.key_phase == 1
        assert packet.open_one_rtt(ours, parsed) == b"x" * 40
    assert ours.key_phase == 1


def test_multipath_nonce_puts_the_path_id_above_the_packet_number() -> None:
    key = PacketKey(AES_128_GCM_SHA256, os.urandom(32))
    iv = int.from_bytes(key.nonce(0), "big")
    assert key.nonce(5, path_id=3) == (iv ^ (3 << 64) ^ 5).to_bytes(12, "big")
    header = b"\x40abcdefgh\x00\x05"
    sealed = key.seal(header, b"payload", 5, path_id=3)
    assert sealed != key.seal(header, b"payload", 5, path_id=0)
    assert key.open(header, sealed, 5, path_id=3) == b"payload"
    with pytest.raises(QuicDecryptError):
        key.open(header, sealed, 5, path_id=4)


@pytest.mark.parametrize("suite", SUITES)
def test_batched_masks_equal_one_by_one(suite: int) -> None:
    hp = HeaderProtection(suite, os.urandom(48 if suite == AES_256_GCM_SHA384 else 32))
    samples = [os.urandom(16) for _ in range(40)]
    batch = hp.masks(b"".join(samples))
    assert len(batch) == 16 * len(samples)
    for i, sample in enumerate(samples):
        assert batch[16 * i : 16 * i + 5] == hp.mask(sample)
    with pytest.raises(QuicError):
        hp.masks(b"short")


def test_burst_round_trip_with_one_mask_call_each_way() -> None:
    secret = os.urandom(32)
    prot = Protection(AES_128_GCM_SHA256, secret)
    dcid = os.urandom(8)
    burst = []
    for pn in range(100, 164):
        header = packet.build_short_header(dcid, pn, 2)
        burst.append((header, os.urandom(1200 + pn % 7), pn))
    datagrams = packet.seal_packets(prot.key, prot.hp, burst)
    parsed = [packet.split_datagram(bytes(d), 8)[0] for d in datagrams]
    packet.unprotect_headers(parsed, prot.hp, 99)
    for (header, payload, pn), p in zip(burst, parsed, strict=True):
        assert p.packet_number == pn and p.header == header
        assert packet.open_packet(prot.key, p) == payload


def test_tampering_is_a_decrypt_error() -> None:
    prot = Protection(AES_128_GCM_SHA256, os.urandom(32))
    header = packet.build_short_header(b"12345678", 7, 1)
    sealed = packet.seal_packet(prot.key, prot.hp, header, b"hello world", 7)
    sealed[-1] ^= 1
    [p] = packet.split_datagram(bytes(sealed), 8)
    packet.unprotect_headers([p], prot.hp, 6)
    with pytest.raises(QuicDecryptError):
        packet.open_packet(prot.key, p)


def test_unsupported_cipher_suite_is_a_typed_error() -> None:
    with pytest.raises(QuicError):
        PacketKey(0x1304, bytes(32))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=1500), short_len=st.integers(0, 20), largest=st.integers(-1, 2**32))
def test_garbage_never_opens_and_only_typed_errors_escape(data: bytes, short_len: int, largest: int) -> None:
    prot = Protection(AES_128_GCM_SHA256, b"\x07" * 32)
    try:
        packets = packet.split_datagram(data, short_len)
    except QuicError:
        return
    headered = [p for p in packets if p.packet_type in (packet.PACKET_INITIAL, packet.PACKET_ZERO_RTT,
                                                         packet.PACKET_HANDSHAKE, packet.PACKET_ONE_RTT)]
    packet.unprotect_headers(headered, prot.hp, largest)
    for p in headered:
        with pytest.raises(QuicError):
            packet.open_packet(prot.key, p)


_FUZZ_KEYS = Protection(AES_128_GCM_SHA256, b"\x09" * 32)


@settings(max_examples=300, deadline=None)
@given(
    long_header=st.booleans(),
    payload=st.binary(min_size=4, max_size=300),
    pn=st.integers(0, 2**20),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=4),
)
def test_fuzz_mutated_packets_only_typed_errors(
    long_header: bool, payload: bytes, pn: int, flips: list[tuple[int, int]]
) -> None:
    """Whole receive pipeline on a sealed packet with flipped bits: typed errors or the original."""
    dcid = b"\x05" * 8
    if long_header:
        header = packet.build_long_header(packet.PACKET_HANDSHAKE, dcid, b"\x06" * 8, pn, 3, len(payload))
    else:
        header = packet.build_short_header(dcid, pn, 3)
    sealed = packet.seal_packet(_FUZZ_KEYS.key, _FUZZ_KEYS.hp, header, payload, pn)
    for index, mask in flips:
        sealed[index % len(sealed)] ^= mask
    try:
        parts = packet.split_datagram(bytes(sealed), 8)
        protected = [p for p in parts if p.pn_offset]
        packet.unprotect_headers(protected, _FUZZ_KEYS.hp, pn - 1)
        for p in protected:
            plain = packet.open_packet(_FUZZ_KEYS.key, p)
            assert plain == payload and p.packet_number == pn
    except QuicError:
        assert flips
