"""Hole punching without sockets: control packets, STUN, path choice and punch rounds."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.base.keys import SecretKey
from irohpy.base.relay_url import RelayUrl
from irohpy.errors import ControlPacketError, IrohError, StunError
from irohpy.relay import stun
from irohpy.socket import control
from irohpy.socket.holepunch import HEARTBEAT, MAX_PROBES, HolePunch, SendCallMeMaybe, SendPing
from irohpy.socket.paths import DEAD_AFTER, HYSTERESIS, RelayPath, RemotePaths

A, B, EVE = SecretKey.generate(), SecretKey.generate(), SecretKey.generate()
RELAY = RelayPath(RelayUrl.parse("http://relay.test:3340"), B.public())
D1, D2 = ("203.0.113.21", 40000), ("198.51.100.2", 40000)


def test_x25519_conversion_agrees_with_the_secret_side() -> None:
    for _ in range(20):
        key = SecretKey.generate()
        derived = control.x25519_secret(key).public_key().public_bytes_raw()
        assert control.x25519_public(key.public()).public_bytes_raw() == derived


@pytest.mark.parametrize("msg", [
    control.Ping(b"\x01" * 12),
    control.Pong(b"\x02" * 12, ("203.0.113.5", 1234)),
    control.Pong(b"\x03" * 12, ("2001:db8::1", 65535)),
    control.CallMeMaybe(()),
    control.CallMeMaybe((("192.0.2.1", 1), ("2001:db8::2", 2))),
])
def test_seal_open_round_trip(msg: control.Message) -> None:
    packet = control.ControlCodec(A).seal(B.public(), msg)
    assert packet[0] & 0x40 == 0 and control.is_control(packet)  # never mistaken for QUIC
    sender, opened = control.ControlCodec(B).open(packet)
    assert sender == A.public() and opened == msg


def test_pong_is_never_larger_than_its_ping() -> None:
    codec = control.ControlCodec(A)
    ping = codec.seal(B.public(), control.Ping(b"\0" * 12))
    pong = codec.seal(B.public(), control.Pong(b"\0" * 12, ("2001:db8::1", 1)))
    assert len(pong) <= len(ping)


def test_forged_packets_do_not_open() -> None:
    bob = control.ControlCodec(B)
    # Eve claims to be A: she cannot produce A's key, so the tag fails.
    forged = bytearray(control.ControlCodec(EVE).seal(B.public(), control.Ping(b"\0" * 12)))
    forged[5:37] = bytes(A.public())
    with pytest.raises(ControlPacketError, match="authentication"):
        bob.open(bytes(forged))
    # Any flipped bit of a genuine packet fails too.
    genuine = control.ControlCodec(A).seal(B.public(), control.Ping(b"\0" * 12))
    for i in range(len(genuine)):
        flipped = bytearray(genuine)
        flipped[i] ^= 0x01
        with pytest.raises(ControlPacketError):
            bob.open(bytes(flipped))
    # A packet sealed for someone else does not open here.
    with pytest.raises(ControlPacketError):
        bob.open(control.ControlCodec(A).seal(EVE.public(), control.Ping(b"\0" * 12)))


def test_replays_are_refused() -> None:
    alice, bob = control.ControlCodec(A), control.ControlCodec(B)
    first = alice.seal(B.public(), control.Ping(b"\x01" * 12))
    second = alice.seal(B.public(), control.Ping(b"\x02" * 12))
    bob.open(second)
    bob.open(first)  # reordered within the window: fine
    for packet in (first, second):
        with pytest.raises(ControlPacketError, match="replayed"):
            bob.open(packet)


def test_replay_guard_window_and_skew() -> None:
    guard = control.ReplayGuard()
    now = time.time_ns() // 1000
    peer = A.public()
    guard.check(peer, now, now)
    guard.check(peer, now + 10, now)
    with pytest.raises(ControlPacketError):
        guard.check(peer, now - control.REORDER_WINDOW_US - 1, now)
    with pytest.raises(ControlPacketError, match="clock"):
        guard.check(B.public(), now - control.MAX_SKEW_US - 1, now)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=900))
def test_fuzz_control_open(data: bytes) -> None:
    codec = control.ControlCodec(B)
    for candidate in (data, control.MAGIC + b"\x01" + data):
        try:
            codec.open(candidate)
        except IrohError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_fuzz_control_body(data: bytes) -> None:
    try:
        control.decode_body(data)
    except ControlPacketError:
        pass


def test_stun_round_trip() -> None:
    request, tx = stun.binding_request()
    assert stun.is_stun(request) and request[0] & 0x40 == 0
    assert stun.parse(request) == stun.StunMessage(stun.BINDING_REQUEST, tx, None)
    for addr in (("203.0.113.7", 40001), ("2001:db8::7", 9)):
        response = stun.binding_response(tx, addr)
        assert stun.parse(response).mapped == addr


def test_stun_known_answer() -> None:
    # RFC 5769 §2.2 response, reduced to its XOR-MAPPED-ADDRESS (192.0.2.1:32853).
    tx = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert stun.binding_response(tx, ("192.0.2.1", 32853))[20:] == bytes.fromhex("002000080001a147e112a643")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_stun(data: bytes) -> None:
    for candidate in (data, b"\x01\x01" + len(data[:40]).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + data[:52]):
        try:
            stun.parse(candidate)
        except StunError:
            pass


# -- path choice ---------------------------------------------------------------------


def control_paths() -> RemotePaths:
    paths = RemotePaths()
    paths.add_candidate(RELAY, "dial")
    paths.on_authenticated(RELAY, 0.0)
    paths.speaks_control = True
    return paths


def test_direct_needs_a_round_trip_and_then_beats_the_relay() -> None:
    paths = control_paths()
    events: list[str] = []
    paths.listener = lambda e: events.append(e.kind)
    assert paths.selected == RELAY
    # QUIC from a new address alone does not move a control-speaking peer: probe it first.
    assert not paths.on_authenticated(D1, 1.0)
    assert paths.selected == RELAY and D1 in paths.to_probe
    assert paths.on_pong(D1, 0.010, 1.0)
    assert paths.selected == D1 and events == ["validated", "selected"]


def test_lower_rtt_wins_only_beyond_hysteresis() -> None:
    paths = control_paths()
    paths.on_pong(D1, 0.020, 1.0)
    assert not paths.on_pong(D2, 0.020 - HYSTERESIS / 2, 1.1)
    assert paths.selected == D1
    paths.paths[D2].rtt = None
    assert paths.on_pong(D2, 0.020 - 2 * HYSTERESIS, 1.2)
    assert paths.selected == D2


def test_silent_direct_path_falls_back_to_relay() -> None:
    paths = control_paths()
    events: list[str] = []
    paths.on_pong(D1, 0.01, 1.0)
    paths.listener = lambda e: events.append(e.kind)
    assert not paths.check(1.0 + DEAD_AFTER - 0.1)
    assert paths.check(1.0 + DEAD_AFTER + 0.1)
    assert paths.selected == RELAY and events == ["lost", "fallback"]
    assert not paths.check(10.0) and events == ["lost", "fallback"]


def test_peers_without_control_keep_the_quic_rule() -> None:
    paths = RemotePaths()
    paths.add_candidate(RELAY, "dial")
    paths.on_authenticated(RELAY, 0.0)
    assert paths.on_authenticated(D1, 0.5)  # Rust iroh: authenticated QUIC is the evidence
    assert not paths.check(100.0)  # and no heartbeat, so silence alone never drops it


# -- punch rounds --------------------------------------------------------------------------


def ids() -> object:
    counter = iter(range(1, 10_000))
    return lambda: next(counter).to_bytes(12, "big")


def test_round_sends_candidates_and_pings_then_backs_off() -> None:
    punch, paths = HolePunch(ids()), control_paths()  # type: ignore[arg-type]
    paths.add_candidate(D1, "dial")
    punch.start(0.0)
    actions = punch.tick(0.0, paths)
    assert SendCallMeMaybe(RELAY) in actions and any(isinstance(a, SendPing) and a.path == D1 for a in actions)
    assert punch.tick(0.1, paths) == []
    assert punch.tick(0.6, paths)  # second round after 0.5 s
    times = [t / 10 for t in range(7, 200)]
    rounds = sum(1 for t in times if any(isinstance(a, SendCallMeMaybe) for a in punch.tick(t, paths)))
    assert rounds == 5  # at 1.6, 3.6, 7.6 (+1, +2, +4 s), then every 5 s: 12.6, 17.6


def test_call_me_maybe_pings_back_and_pong_must_match() -> None:
    punch, paths = HolePunch(ids()), control_paths()  # type: ignore[arg-type]
    actions = punch.on_call_me_maybe(0.0, paths, (D1, D2))
    pings = {a.path: a.tx_id for a in actions if isinstance(a, SendPing)}
    assert set(pings) == {D1, D2}
    assert punch.on_pong(b"\xff" * 12, D1, 0.01) is None  # answers nothing we sent
    assert punch.on_pong(pings[D1], D2, 0.01) is None  # from the wrong path
    assert punch.on_pong(pings[D1], D1, 0.01) == (D1, pytest.approx(0.01))
    assert punch.on_pong(pings[D1], D1, 0.02) is None  # a replayed pong matches nothing


def test_heartbeat_on_the_selected_direct_path() -> None:
    punch, paths = HolePunch(ids()), control_paths()  # type: ignore[arg-type]
    paths.on_pong(D1, 0.01, 0.0)
    assert [a for a in punch.tick(0.0, paths) if isinstance(a, SendPing)]
    assert punch.tick(0.5, paths) == []
    beat = punch.tick(HEARTBEAT + 0.01, paths)
    assert [a.path for a in beat if isinstance(a, SendPing)] == [D1]
    assert not any(isinstance(a, SendCallMeMaybe) for a in beat)  # direct and live: no rounds


def test_documented_ping_body() -> None:
    # docs/wire/holepunch.md, "Example".
    body = control.encode_body(control.Ping(bytes(range(12))), 1_764_000_000_000_000)
    assert body == bytes.fromhex("01" "0006445941624000" "000102030405060708090a0b") + bytes(19)
    assert len(control.ControlCodec(A).seal(B.public(), control.Ping(bytes(range(12))))) == 105


def test_a_new_dial_fans_out_when_the_old_choice_went_quiet() -> None:
    paths = RemotePaths()
    paths.add_candidate(RELAY, "dial")
    paths.on_authenticated(D1, 0.0)
    paths.forget_stale_choice(1.0)
    assert paths.selected == D1
    paths.forget_stale_choice(DEAD_AFTER + 1.0)
    assert paths.selected is None and set(paths.send_targets()) == {RELAY, D1}


def test_a_path_that_never_answers_is_probed_a_bounded_number_of_times() -> None:
    punch, paths = HolePunch(ids()), RemotePaths()  # type: ignore[arg-type]
    paths.speaks_control = True  # no relay, so no rounds: only the probes ping
    paths.on_authenticated(D2, 0.0)  # heard there; it needs a round trip first
    assert D2 in paths.to_probe
    probes = 0
    for step in range(200):  # 20 s of ticks, no Pong ever
        probes += sum(1 for a in punch.tick(step / 10, paths) if isinstance(a, SendPing) and a.path == D2)
    assert probes == MAX_PROBES and D2 not in paths.to_probe
