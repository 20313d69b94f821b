"""irohpy.quic.nat_traversal: n0's NAT traversal as noq runs it, driven with explicit time.

The transport parameter and frame layouts, the server's announcements, the client's rounds and
the server's answer to them, noq's probe count and backoff, paths opened from matching
responses, and what an attacker (a peer, or anyone off-path) can and cannot make it do.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import InvalidAddr, NatTraversalError, QuicDecodeError, QuicError
from irohpy.quic import frames as f
from irohpy.quic import transport_params as tp
from irohpy.quic.errors import QuicTransportStateError
from irohpy.quic.nat_traversal import (
    MAX_EXTRA_CHALLENGES,
    MAX_PROBE_ATTEMPTS,
    NatTraversal,
    OpenPath,
    Probe,
    canonical,
    negotiated,
)
from irohpy.quic.packet import PACKET_ONE_RTT
from irohpy.quic.transport_params import TransportParameters
from irohpy.quic.varint import encode_varint

RTT = 0.333
BASE = RTT / 10
SERVER_ADDRS = [("203.0.113.1", 4000), ("2001:db8::1", 4001), ("192.168.1.2", 4002)]
CLIENT_ADDRS = [("198.51.100.7", 5000), ("10.0.0.7", 5001)]


def ip(host: str) -> bytes:
    return ipaddress.ip_address(host).packed


def server(addrs: list[tuple[str, int]] = SERVER_ADDRS, **kw: object) -> NatTraversal:
    nat = NatTraversal(False, **kw)
    nat.set_local_addresses(addrs)
    return nat


def announcements(nat: NatTraversal) -> list[f.Frame]:
    out: list[f.Frame] = []
    while (frame := nat.pop_frame()) is not None:
        out.append(frame)
    return out


def over_the_wire(frames: list[f.Frame]) -> list[f.Frame]:
    """The frames as a 1-RTT payload carries them to the peer."""
    return f.decode_frames(f.encode_frames(frames), PACKET_ONE_RTT) if frames else []


def client_knowing(server_nat: NatTraversal, **kw: object) -> NatTraversal:
    nat = NatTraversal(True, **kw)
    nat.set_local_addresses(CLIENT_ADDRS)
    for frame in over_the_wire(announcements(server_nat)):
        nat.on_frame(frame, 0.0)
    return nat


def probes(nat: NatTraversal) -> list[Probe]:
    out = []
    while (probe := nat.poll_probe()) is not None:
        out.append(probe)
    return out


# -- transport parameter and frames -------------------------------------------------------------


def test_transport_parameter_is_one_raw_byte() -> None:
    params = TransportParameters(max_remote_nat_traversal_addresses=32)
    assert params.encode() == bytes.fromhex("c0003d7f91120401" "01" "20")
    assert TransportParameters.decode(params.encode(), from_server=True).max_remote_nat_traversal_addresses == 32
    for bad in (b"", b"\x00", b"\x01\x02", b"\x40\x20"):  # the last: 32 as a two-byte varint
        raw = encode_varint(tp.TP_N0_NAT_TRAVERSAL) + encode_varint(len(bad)) + bad
        with pytest.raises(QuicDecodeError) as info:
            TransportParameters.decode(raw, from_server=True)
        assert info.value.error_code == QuicError.TRANSPORT_PARAMETER_ERROR
    twice = params.encode() * 2
    with pytest.raises(QuicDecodeError):
        TransportParameters.decode(twice, from_server=True)


def test_negotiated_needs_the_parameter_and_multipath_on_both_sides() -> None:
    iroh = TransportParameters.iroh(b"\x01" * 8)
    bare = TransportParameters()
    no_multipath = TransportParameters(max_remote_nat_traversal_addresses=4)
    assert negotiated(True, iroh, bare) is None
    assert negotiated(True, bare, iroh) is None
    assert negotiated(True, iroh, no_multipath) is None
    peer = TransportParameters(max_remote_nat_traversal_addresses=4, initial_max_path_id=3)
    nat = negotiated(False, iroh, peer)
    assert nat is not None and not nat.is_client
    # Our limit bounds what we take from the peer; the peer's bounds what we announce.
    assert (nat.max_remote, nat.max_local) == (32, 4)


def test_frame_layouts_are_noqs() -> None:
    assert f.encode_frames([f.AddAddress(1, ip("1.2.3.4"), 0x1234)]).hex() == "803d7f90" "01" "01020304" "1234"
    assert f.encode_frames([f.ReachOut(2, ip("::1"), 7)]).hex() == "803d7f93" "02" + "00" * 15 + "01" "0007"
    assert f.encode_frames([f.RemoveAddress(300)]).hex() == "803d7f94" "412c"


NAT_TYPES = [f.FRAME_ADD_ADDRESS_V4, f.FRAME_ADD_ADDRESS_V6, f.FRAME_REACH_OUT_V4, f.FRAME_REACH_OUT_V6,
             f.FRAME_REMOVE_ADDRESS]


@pytest.mark.parametrize("frame_type", NAT_TYPES)
def test_truncated_frames_are_frame_encoding_errors(frame_type: int) -> None:
    full = {
        f.FRAME_ADD_ADDRESS_V4: f.AddAddress(70000, ip("1.2.3.4"), 1),
        f.FRAME_ADD_ADDRESS_V6: f.AddAddress(70000, ip("::1"), 1),
        f.FRAME_REACH_OUT_V4: f.ReachOut(70000, ip("1.2.3.4"), 1),
        f.FRAME_REACH_OUT_V6: f.ReachOut(70000, ip("::1"), 1),
        f.FRAME_REMOVE_ADDRESS: f.RemoveAddress(70000),
    }[frame_type]
    payload = f.encode_frames([full])
    for cut in range(4, len(payload)):
        with pytest.raises(QuicDecodeError) as info:
            f.decode_frames(payload[:cut], PACKET_ONE_RTT)
        assert info.value.error_code == QuicError.FRAME_ENCODING_ERROR
        assert info.value.frame_type == frame_type


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(NAT_TYPES), st.binary(max_size=40))
def test_fuzzed_frames_decode_or_raise_decode_errors(frame_type: int, body: bytes) -> None:
    try:
        frames = f.decode_frames(encode_varint(frame_type) + body, PACKET_ONE_RTT)
    except QuicDecodeError:
        return
    assert isinstance(frames[0], (f.AddAddress, f.ReachOut, f.RemoveAddress))


# -- the server announces -----------------------------------------------------------------------


def test_server_announces_with_sequence_numbers_and_withdraws() -> None:
    nat = server()
    assert announcements(nat) == [
        f.AddAddress(0, ip("203.0.113.1"), 4000),
        f.AddAddress(1, ip("2001:db8::1"), 4001),
        f.AddAddress(2, ip("192.168.1.2"), 4002),
    ]
    nat.set_local_addresses([("203.0.113.1", 4000), ("::ffff:198.51.100.9", 4003)])
    assert announcements(nat) == [f.AddAddress(3, ip("198.51.100.9"), 4003), f.RemoveAddress(1), f.RemoveAddress(2)]
    assert nat.local_addresses() == [("203.0.113.1", 4000), ("198.51.100.9", 4003)]
    # An address withdrawn before its ADD_ADDRESS left is never mentioned.
    nat.add_local_address(("192.0.2.5", 1))
    nat.remove_local_address(("192.0.2.5", 1))
    assert announcements(nat) == []


def test_local_candidates_are_bounded_by_the_peers_limit() -> None:
    nat = NatTraversal(False, max_local=2)
    nat.add_local_address(("192.0.2.1", 1))
    nat.add_local_address(("192.0.2.2", 1))
    nat.add_local_address(("192.0.2.2", 1))  # known: fine
    with pytest.raises(NatTraversalError) as info:
        nat.add_local_address(("192.0.2.3", 1))
    assert not info.value.transient
    nat.set_local_addresses([("192.0.2.9", 1), ("192.0.2.8", 1), ("192.0.2.7", 1), ("0.0.0.0", 1), ("192.0.2.6", 0)])
    assert nat.local_addresses() == [("192.0.2.9", 1), ("192.0.2.8", 1)]
    with pytest.raises(NatTraversalError):
        nat.add_local_address(("224.0.0.1", 5))


def test_lost_frames_are_sent_again_only_while_true() -> None:
    nat = server([("192.0.2.1", 1), ("192.0.2.2", 2)])
    first, second = announcements(nat)
    nat.remove_local_address(("192.0.2.2", 2))
    [remove] = announcements(nat)
    nat.on_frame_lost(first)
    nat.on_frame_lost(second)  # withdrawn since: not repeated
    nat.on_frame_lost(remove)
    assert announcements(nat) == [first, remove]

    client = client_knowing(server())
    client.initiate_round(0.0)
    reach_outs = announcements(client)
    client.on_frame_lost(reach_outs[0])
    assert announcements(client) == [reach_outs[0]]
    client.initiate_round(1.0)
    announcements(client)
    client.on_frame_lost(reach_outs[1])  # an older round's: not repeated
    assert announcements(client) == []


# -- the client learns and runs rounds ----------------------------------------------------------------


def test_client_learns_server_candidates() -> None:
    client = client_knowing(server())
    assert client.remote_addresses() == SERVER_ADDRS
    assert client.take_remote_changed() and not client.take_remote_changed()
    client.on_frame(f.RemoveAddress(1), 0.0)
    client.on_frame(f.RemoveAddress(99), 0.0)  # unknown: ignored
    client.on_frame(f.AddAddress(0, ip("::ffff:203.0.113.50"), 4000), 0.0)  # a sequence number's newer value
    assert client.remote_addresses() == [("203.0.113.50", 4000), ("192.168.1.2", 4002)]
    assert client.take_remote_changed()


def test_round_sends_one_reach_out_per_local_candidate_and_probes_every_server_candidate() -> None:
    client = client_knowing(server())
    assert client.initiate_round(10.0) == SERVER_ADDRS
    assert client.round == 1
    assert announcements(client) == [f.ReachOut(1, ip("198.51.100.7"), 5000), f.ReachOut(1, ip("10.0.0.7"), 5001)]
    sent = probes(client)
    assert [p.addr for p in sent] == SERVER_ADDRS
    assert len({p.token for p in sent}) == 3 and all(len(p.token) == 8 for p in sent)
    client.initiate_round(11.0)
    assert client.round == 2
    assert [fr.round for fr in announcements(client)] == [2, 2]


def test_round_needs_local_candidates_and_the_client_side() -> None:
    nat = NatTraversal(True)
    with pytest.raises(NatTraversalError) as info:
        nat.initiate_round(0.0)
    assert info.value.transient
    with pytest.raises(NatTraversalError) as info:
        server().initiate_round(0.0)
    assert not info.value.transient


def probe_times(nat: NatTraversal, start: float) -> list[float]:
    """When the probes go out, running the core's timer until it stops."""
    times = [start] * len(probes(nat))
    while nat.deadline is not None:
        now = nat.deadline
        nat.on_timeout(now)
        times += [now] * len(probes(nat))
    return times


def test_probe_schedule_is_nine_probes_with_capped_backoff() -> None:
    client = client_knowing(server([("203.0.113.1", 4000)]))
    client.initiate_round(100.0)
    times = probe_times(client, 100.0)
    assert len(times) == MAX_PROBE_ATTEMPTS
    gaps = [round(b - a, 6) for a, b in zip(times, times[1:])]
    # noq's test_retry_delay_client_ipv6: 33.3, 33.3, 66.6, 133.2, 266.4, 532.8, 1065.6 ms, then 2 s caps.
    assert gaps == [round(x, 6) for x in [BASE, BASE, 2 * BASE, 4 * BASE, 8 * BASE, 16 * BASE, 32 * BASE, 2.0]]
    assert client.deadline is None
    assert 4.0 < times[-1] - times[0] < 4.2


def test_retry_delay_follows_initial_rtt() -> None:
    client = client_knowing(server([("203.0.113.1", 4000)]), initial_rtt=0.1)
    client.initiate_round(0.0)
    times = probe_times(client, 0.0)
    assert [round(t, 6) for t in times[:4]] == [0.0, 0.01, 0.02, 0.04]


def test_matching_response_opens_a_path_and_ends_that_addresses_probing() -> None:
    client = client_knowing(server())
    client.initiate_round(0.0)
    first = {p.addr: p.token for p in probes(client)}
    assert client.on_path_response(("203.0.113.1", 4000), first[("203.0.113.1", 4000)], local="10.0.0.7")
    assert client.poll_path_open() == OpenPath(("203.0.113.1", 4000), "10.0.0.7")
    assert client.poll_path_open() is None
    client.on_timeout(client.deadline or 0.0)
    assert [p.addr for p in probes(client)] == SERVER_ADDRS[1:]
    # The same response again is spent.
    assert not client.on_path_response(("203.0.113.1", 4000), first[("203.0.113.1", 4000)])


def test_ipv6_candidates_are_skipped_without_ipv6() -> None:
    client = client_knowing(server(), ipv6=False)
    assert client.initiate_round(0.0) == [SERVER_ADDRS[0], SERVER_ADDRS[2]]
    assert all(":" not in a for a, _ in (p.addr for p in probes(client)))


def test_an_answered_probe_gives_the_new_path_its_round_trip() -> None:
    client = client_knowing(server())
    client.initiate_round(5.0)
    probe = client.poll_probe(5.0)
    assert probe is not None
    assert client.on_path_response(probe.addr, probe.token, None, 5.003)
    opening = client.poll_path_open()
    assert opening is not None and opening.rtt == pytest.approx(0.003)
    # A piggybacked challenge is timed the same way; an untimed one gives no round trip.
    token = client.challenge_with_response(("203.0.113.50", 7000), 6.0)
    assert token is not None and client.on_path_response(("203.0.113.50", 7000), token, None, 6.01)
    opening = client.poll_path_open()
    assert opening is not None and opening.remote == ("203.0.113.50", 7000) and opening.rtt == pytest.approx(0.01)
    token = client.challenge_with_response(("203.0.113.51", 7000))
    assert token is not None and client.on_path_response(("203.0.113.51", 7000), token, None, 7.0)
    assert client.poll_path_open() == OpenPath(("203.0.113.51", 7000), None, None)


def test_blocked_path_open_is_kept_for_later() -> None:
    client = client_knowing(server())
    client.initiate_round(0.0)
    probe = probes(client)[0]
    assert client.on_path_response(probe.addr, probe.token)
    opening = client.poll_path_open()
    assert opening is not None
    client.path_open_blocked(opening)
    assert client.poll_path_open() == opening


# -- the server answers rounds ------------------------------------------------------------------------


def reach_out(round_: int, addr: tuple[str, int]) -> f.ReachOut:
    return f.ReachOut(round_, ip(addr[0]), addr[1])


def test_server_probes_every_client_candidate_of_the_newest_round() -> None:
    nat = server()
    nat.on_frame(reach_out(1, CLIENT_ADDRS[0]), 5.0)
    nat.on_frame(reach_out(1, CLIENT_ADDRS[1]), 5.0)
    nat.on_frame(reach_out(1, CLIENT_ADDRS[1]), 5.0)  # retransmitted
    assert [p.addr for p in probes(nat)] == CLIENT_ADDRS
    assert nat.deadline == pytest.approx(5.0 + BASE)
    # A newer round forgets the old one, including its outstanding tokens.
    nat.on_frame(reach_out(2, ("198.51.100.8", 6000)), 6.0)
    nat.on_frame(reach_out(1, CLIENT_ADDRS[0]), 6.0)  # older round: ignored
    [probe] = probes(nat)
    assert probe.addr == ("198.51.100.8", 6000) and nat.round == 2
    times = probe_times(nat, 6.0)
    assert len(times) == MAX_PROBE_ATTEMPTS - 1  # the first went out above
    # noq's test_retry_delay_server_ipv6: the same backoff as the client's.
    assert [round(t - 6.0, 6) for t in times[:3]] == [round(BASE, 6), round(2 * BASE, 6), round(4 * BASE, 6)]
    # A server's matched probe opens nothing: only the client opens paths.
    nat.on_frame(reach_out(3, ("198.51.100.9", 7000)), 20.0)
    [probe] = probes(nat)
    assert nat.on_path_response(probe.addr, probe.token)
    assert nat.poll_path_open() is None
    assert nat.retry_delay() is None


def test_the_client_answers_a_server_probe_with_a_challenge_of_its_own() -> None:
    """noq puts a PATH_CHALLENGE beside every off-path PATH_RESPONSE of a client: a server
    behind a NAT that rewrites ports (never announced) is reached through its own probe."""
    client = client_knowing(server())
    client.initiate_round(0.0)
    token = client.challenge_with_response(("::ffff:192.0.2.200", 61000))
    assert token is not None
    assert client.on_path_response(("192.0.2.200", 61000), token)
    assert client.poll_path_open() == OpenPath(("192.0.2.200", 61000), None)
    assert server().challenge_with_response(("192.0.2.200", 61000)) is None


# -- wrong side, limits and attackers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("is_client", "frame", "frame_type"),
    [
        (False, f.AddAddress(0, bytes(4), 1), f.FRAME_ADD_ADDRESS_V4),
        (False, f.AddAddress(0, bytes(15) + b"\x01", 1), f.FRAME_ADD_ADDRESS_V6),
        (False, f.RemoveAddress(0), f.FRAME_REMOVE_ADDRESS),
        (True, f.ReachOut(1, bytes(4), 1), f.FRAME_REACH_OUT_V4),
        (True, f.ReachOut(1, bytes(15) + b"\x01", 1), f.FRAME_REACH_OUT_V6),
    ],
)
def test_frames_from_the_wrong_side_are_protocol_violations(is_client: bool, frame: f.Frame, frame_type: int) -> None:
    nat = NatTraversal(is_client)
    with pytest.raises(QuicTransportStateError) as info:
        nat.on_frame(frame, 0.0)
    assert info.value.error_code == QuicError.PROTOCOL_VIOLATION
    assert info.value.frame_type == frame_type


def test_too_many_addresses_in_one_round_is_a_protocol_violation() -> None:
    nat = NatTraversal(False, max_remote=4)
    for port in range(1, 5):
        nat.on_frame(reach_out(1, ("198.51.100.1", port)), 0.0)
    with pytest.raises(QuicTransportStateError) as info:
        nat.on_frame(reach_out(1, ("198.51.100.1", 5)), 0.0)
    assert info.value.error_code == QuicError.PROTOCOL_VIOLATION


def test_server_candidates_past_our_limit_are_dropped() -> None:
    client = NatTraversal(True, max_remote=3)
    for seq in range(1000):
        client.on_frame(f.AddAddress(seq, ip("203.0.113.1"), 1 + seq), 0.0)
    assert len(client.remote_addresses()) == 3
    # Addresses nobody can be reached at are not candidates.
    client.on_frame(f.RemoveAddress(0), 0.0)
    for bad in [("0.0.0.0", 1), ("::", 1), ("224.0.0.1", 1), ("255.255.255.255", 1), ("203.0.113.1", 0)]:
        client.on_frame(f.AddAddress(5000, ip(bad[0]), bad[1]), 0.0)
    assert len(client.remote_addresses()) == 2


def test_reach_out_flood_leaves_one_rounds_worth_of_state() -> None:
    """A peer sending ever newer rounds gets one probe per round it names, and every round
    wipes the last: state and outstanding tokens never grow past one round's."""
    nat = NatTraversal(False, max_remote=8)
    for round_ in range(1, 10_001):
        nat.on_frame(reach_out(round_, ("198.51.100.1", 1 + round_ % 60000)), float(round_) * 1e-4)
    assert nat.round == 10_000
    assert len(probes(nat)) == 1
    assert nat.footprint() <= 3
    for port in range(1, 9):
        nat.on_frame(reach_out(10_001, ("198.51.100.2", port)), 1.0)
    probes(nat)
    probe_times(nat, 1.0)
    assert nat.footprint() <= 8 * 2 + 8 * MAX_PROBE_ATTEMPTS


def test_forged_and_unsolicited_responses_move_nothing() -> None:
    client = client_knowing(server())
    client.initiate_round(0.0)
    real = probes(client)
    before = client.footprint()
    assert not client.on_path_response(("203.0.113.1", 4000), b"\x00" * 8)  # guessed token
    assert not client.on_path_response(("192.0.2.66", 1), real[0].token)  # right token, wrong sender
    assert not client.on_path_response(("192.0.2.66", 1), b"short")
    assert client.poll_path_open() is None and client.footprint() == before
    # The round that sent them ended: late responses are stale.
    client.initiate_round(1.0)
    assert not client.on_path_response(real[0].addr, real[0].token)
    assert client.poll_path_open() is None


def test_forged_responses_cost_no_public_key_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("public-key operation")

    for cls, name in [(x25519.X25519PrivateKey, "exchange"), (ed25519.Ed25519PublicKey, "verify"),
                      (ed25519.Ed25519PrivateKey, "sign")]:
        monkeypatch.setattr(cls, name, refuse)
    client = client_knowing(server())
    client.initiate_round(0.0)
    probes(client)
    for i in range(20_000):
        assert not client.on_path_response(("203.0.113.1", 4000), i.to_bytes(8, "big"))


def test_outstanding_challenges_are_bounded() -> None:
    client = client_knowing(server(), max_remote=4)
    client.initiate_round(0.0)
    for port in range(1, 5000):
        client.challenge_with_response(("192.0.2.1", port))
    assert client.footprint() <= 4 * MAX_PROBE_ATTEMPTS + MAX_EXTRA_CHALLENGES + 4 + 2 * 2 + 3
    # Even after many matched responses, the paths waiting to open stay bounded.
    for port in range(1, 5000):
        token = client.challenge_with_response(("192.0.2.2", port))
        assert token is not None
        client.on_path_response(("192.0.2.2", port), token)
    assert client.footprint() <= 4 * MAX_PROBE_ATTEMPTS + 2 * MAX_EXTRA_CHALLENGES + 4 + 2 * 2 + 3 + 4


def test_canonical_forms() -> None:
    assert canonical("::ffff:10.0.0.1", 1) == ("10.0.0.1", 1)
    assert canonical("2001:DB8::0:1", 2) == ("2001:db8::1", 2)
    assert canonical(ip("fe80::1"), 3) == ("fe80::1", 3)
    assert canonical("fe80::1%eth0", 3) == ("fe80::1", 3)
    with pytest.raises(InvalidAddr):
        canonical("relay.example", 1)
    with pytest.raises(InvalidAddr):
        canonical("192.0.2.1", 65536)


# -- both cores through two cone NATs ------------------------------------------------------------------


class ConeNat:
    """Endpoint-independent mapping and filtering by remote address ("port-restricted cone"):
    an inbound packet passes once the inside host has sent to its sender."""

    def __init__(self, public: tuple[str, int]) -> None:
        self.public = public
        self.opened: set[tuple[str, int]] = set()

    def outbound(self, dst: tuple[str, int]) -> None:
        self.opened.add(dst)

    def admits(self, src: tuple[str, int]) -> bool:
        return src in self.opened


def test_client_and_server_cores_punch_through_two_cone_nats() -> None:
    client_nat, server_nat = ConeNat(("198.51.100.7", 5000)), ConeNat(("203.0.113.1", 4000))
    srv = server([server_nat.public, ("192.168.1.2", 4002)])
    cli = NatTraversal(True)
    cli.set_local_addresses([client_nat.public, ("10.0.0.7", 5001)])
    for frame in over_the_wire(announcements(srv)):  # over the relay path
        cli.on_frame(frame, 0.0)
    now = 0.0
    cli.initiate_round(now)
    for frame in over_the_wire(announcements(cli)):
        srv.on_frame(frame, now)
    opened = None
    while opened is None and now < 5.0:
        for probe in probes(cli):
            client_nat.outbound(probe.addr)
            if probe.addr == server_nat.public and server_nat.admits(client_nat.public):
                # The server answers to the probe's source, through the hole it just sent through.
                assert cli.on_path_response(server_nat.public, probe.token)
        for probe in probes(srv):
            server_nat.outbound(probe.addr)  # opens the server's NAT; dropped at the client's
        opened = cli.poll_path_open()
        if opened is not None:
            break
        deadlines = [d for d in (cli.deadline, srv.deadline) if d is not None]
        if not deadlines:
            break
        now = min(deadlines)
        cli.on_timeout(now)
        srv.on_timeout(now)
    assert opened == OpenPath(server_nat.public, None)
    assert now == pytest.approx(BASE)  # the second client probe, after the server's first


# -- fuzzing the state machine -------------------------------------------------------------------------

small_addr = st.tuples(st.sampled_from(["192.0.2.1", "192.0.2.2", "::ffff:192.0.2.3", "2001:db8::9", "0.0.0.0"]),
                       st.integers(0, 3))
operation = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 50), small_addr),
    st.tuples(st.just("remove"), st.integers(0, 50)),
    st.tuples(st.just("reach"), st.integers(0, 6), small_addr),
    st.tuples(st.just("local"), small_addr),
    st.tuples(st.just("round")),
    st.tuples(st.just("tick"), st.floats(0, 3)),
    st.tuples(st.just("probe")),
    st.tuples(st.just("response"), small_addr, st.binary(min_size=8, max_size=8)),
)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(operation, max_size=60))
def test_any_sequence_keeps_the_core_consistent_and_bounded(is_client: bool, ops: list[tuple[Any, ...]]) -> None:
    nat = NatTraversal(is_client, max_remote=4, max_local=3)
    now = 0.0
    tokens: list[tuple[tuple[str, int], bytes]] = []
    for op in ops:
        kind = op[0]
        try:
            if kind == "add":
                nat.on_frame(f.AddAddress(op[1], ip(op[2][0]), op[2][1]), now)
            elif kind == "remove":
                nat.on_frame(f.RemoveAddress(op[1]), now)
            elif kind == "reach":
                nat.on_frame(f.ReachOut(op[1], ip(op[2][0]), op[2][1]), now)
            elif kind == "local":
                nat.add_local_address(op[1])
            elif kind == "round":
                nat.initiate_round(now)
            elif kind == "tick":
                now += op[1]
                nat.on_timeout(now)
            elif kind == "probe":
                probe = nat.poll_probe()
                if probe is not None:
                    tokens.append((probe.addr, probe.token))
            elif tokens and op[2][0] == 0:
                nat.on_path_response(*tokens.pop())
            else:
                nat.on_path_response(op[1], op[2])
        except QuicTransportStateError as exc:
            assert exc.error_code == QuicError.PROTOCOL_VIOLATION
        except NatTraversalError:
            pass
        nat.pop_frame()
        nat.poll_path_open()
        assert nat.footprint() <= 3 + 4 + 4 + 4 + 4 * MAX_PROBE_ATTEMPTS + MAX_EXTRA_CHALLENGES + 20 + 3 + 3 + 3
        if nat.deadline is not None:
            assert nat.deadline - now <= 2.0 + 1e-9
