"""irohpy.socket.round_scheduler: when rounds run, as iroh's remote state decides, on real
NAT-traversal cores and explicit time."""

from __future__ import annotations

from irohpy.quic import frames as f
from irohpy.quic.nat_traversal import NatTraversal
from irohpy.socket.round_scheduler import (
    RETRY_AFTER,
    ROUND_INTERVAL,
    UPGRADE_INTERVAL,
    RoundScheduler,
    good_enough,
    punching_connection,
)

SERVER = [("203.0.113.1", 4000)]


def client(local: list[tuple[str, int]] | None = None) -> NatTraversal:
    nat = NatTraversal(True)
    nat.set_local_addresses([("198.51.100.7", 5000)] if local is None else local)
    for seq, (host, port) in enumerate(SERVER):
        nat.on_frame(f.AddAddress(seq, bytes(int(x) for x in host.split(".")), port), 0.0)
    return nat


def test_the_lowest_id_client_connection_punches() -> None:
    a, b, srv = client(), client(), NatTraversal(False)
    assert punching_connection([(7, b), (3, srv), (5, a), (1, None)]) is a
    assert punching_connection([(3, srv)]) is None
    assert punching_connection([]) is None


def test_first_trigger_runs_at_once_then_at_most_every_five_seconds() -> None:
    nat = client()
    sched = RoundScheduler(0.0)
    assert sched.trigger(1.0, nat) == SERVER
    assert nat.round == 1
    # Nothing new: deferred to the 5 s mark.
    assert sched.trigger(2.0, nat) is None
    assert nat.round == 1 and sched.scheduled == 1.0 + ROUND_INTERVAL
    assert sched.timeout() == 1.0 + ROUND_INTERVAL
    assert not sched.on_timeout(5.9, [[0.05]])
    assert sched.on_timeout(6.0, [[0.05]])
    assert sched.trigger(6.0, nat) == SERVER
    assert nat.round == 2 and sched.scheduled is None


def test_a_new_candidate_on_either_side_runs_a_round_at_once() -> None:
    nat = client()
    sched = RoundScheduler(0.0)
    sched.trigger(0.0, nat)
    nat.add_local_address(("198.51.100.7", 5001))
    assert sched.trigger(0.5, nat) is not None and nat.round == 2
    nat.on_frame(f.AddAddress(9, bytes([203, 0, 113, 2]), 4000), 0.6)
    assert sched.trigger(0.7, nat) is not None and nat.round == 3
    # A candidate that disappeared is no reason.
    nat.remove_local_address(("198.51.100.7", 5001))
    assert sched.trigger(0.8, nat) is None and nat.round == 3


def test_no_local_candidates_retries_after_100_ms() -> None:
    nat = client(local=[])
    sched = RoundScheduler(0.0)
    assert sched.trigger(1.0, nat) is None
    assert sched.scheduled == 1.0 + RETRY_AFTER
    assert sched.on_timeout(1.0 + RETRY_AFTER, [])
    nat.add_local_address(("198.51.100.7", 5000))
    assert sched.trigger(1.0 + RETRY_AFTER, nat) == SERVER


def test_no_client_connection_runs_nothing() -> None:
    sched = RoundScheduler(0.0)
    assert sched.trigger(0.0, None) is None
    assert sched.scheduled is None


def test_every_minute_a_remote_without_a_fast_ip_path_is_triggered() -> None:
    sched = RoundScheduler(0.0)
    assert sched.timeout() == UPGRADE_INTERVAL
    assert not sched.on_timeout(UPGRADE_INTERVAL, [[0.004], [0.010, 0.2]])  # every connection fast
    assert sched.timeout() == 2 * UPGRADE_INTERVAL
    assert sched.on_timeout(2 * UPGRADE_INTERVAL, [[0.004], [0.011]])  # one is not
    assert sched.on_timeout(3 * UPGRADE_INTERVAL, [[0.004], []])  # one has no IP path
    assert not sched.on_timeout(3 * UPGRADE_INTERVAL + 1, [[]])  # not yet due again


def test_good_enough() -> None:
    assert good_enough([])
    assert good_enough([[0.5, 0.01]])
    assert not good_enough([[0.5, 0.0101]])
    assert not good_enough([[0.001], []])
