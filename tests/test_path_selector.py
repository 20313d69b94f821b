"""irohpy.socket.path_selector: iroh's BiasedRttPathSelector cases, no flapping under jitter,
and what a connection does about the selected path."""

from __future__ import annotations

import random

from irohpy.socket.path_selector import PathInfo, PathPlan, plan_paths, select_path

MS = 0.001
V4_1 = ("192.0.2.1", 1)
V4_2 = ("192.0.2.2", 2)
V6_1 = ("2001:db8::1", 1)
RELAY = "relay https://relay.example./ to abcdef"


def v4(key: object, rtt_ms: float | None) -> PathInfo:
    return PathInfo(key, "ipv4", None if rtt_ms is None else rtt_ms * MS)


def v6(key: object, rtt_ms: float) -> PathInfo:
    return PathInfo(key, "ipv6", rtt_ms * MS)


def relay(rtt_ms: float) -> PathInfo:
    return PathInfo(RELAY, "relay", rtt_ms * MS)


def test_ipv6_wins_within_its_bias() -> None:
    assert select_path(None, [v4(V4_1, 10), v6(V6_1, 10)]) == V6_1
    assert select_path(None, [v4(V4_1, 10), v6(V6_1, 12)]) == V6_1
    assert select_path(None, [v4(V4_1, 10), v6(V6_1, 20)]) == V4_1


def test_primary_beats_backup_whatever_the_rtt_and_at_once() -> None:
    assert select_path(None, [v4(V4_1, 100), relay(10)]) == V4_1
    assert select_path(None, [v4(V4_1, 1000), relay(1)]) == V4_1
    # Currently on the relay: a direct path takes over immediately, no hysteresis across tiers.
    assert select_path(RELAY, [relay(1), v4(V4_1, 1000)]) == V4_1
    # And when the direct path is gone (no stats), the relay takes over.
    assert select_path(V4_1, [v4(V4_1, None), relay(50)]) == RELAY


def test_same_tier_switches_only_five_ms_better() -> None:
    assert select_path(V4_1, [v4(V4_1, 20), v4(V4_2, 18)]) is None
    assert select_path(V4_1, [v4(V4_1, 20), v4(V4_2, 16)]) is None
    assert select_path(V4_1, [v4(V4_1, 20), v4(V4_2, 15)]) == V4_2
    assert select_path(V4_1, [v4(V4_1, 20), v4(V4_2, 14)]) == V4_2


def test_no_current_path_takes_the_best_and_no_paths_keep_the_current() -> None:
    assert select_path(None, [v4(V4_1, 20), v4(V4_2, 10)]) == V4_2
    assert select_path(None, []) is None
    assert select_path(V4_1, []) is None


def test_a_path_on_several_connections_counts_with_its_best_rtt() -> None:
    assert select_path(V4_1, [v4(V4_1, 30), v4(V4_2, 22), v4(V4_1, 20)]) is None
    assert select_path(V4_2, [v4(V4_1, 30), v4(V4_2, 40), v4(V4_1, 20)]) == V4_1


def test_jitter_within_the_hysteresis_never_flaps() -> None:
    rng = random.Random(14)
    current: object = select_path(None, [v4(V4_1, 20), v6(V6_1, 23)])
    switches = 0
    for _ in range(10_000):
        paths = [v4(V4_1, 20 + rng.uniform(-2, 2)), v6(V6_1, 23 + rng.uniform(-2, 2)), relay(rng.uniform(1, 5))]
        chosen = select_path(current, paths)
        if chosen is not None and chosen != current:
            switches += 1
            current = chosen
    assert switches == 0


def test_plan_marks_the_selected_path_available_and_the_rest_backup() -> None:
    paths = {0: relay(40), 1: v4(V4_1, 10), 2: v6(V6_1, 12), 3: PathInfo("custom-1", "custom", 5 * MS)}
    assert plan_paths(paths[1], paths, is_client=True) == PathPlan(False, [1], [0, 3], [2])
    # The server never closes: the two sides must not abandon different paths.
    assert plan_paths(paths[1], paths, is_client=False) == PathPlan(False, [1], [0, 2, 3], [])


def test_plan_opens_a_missing_selected_path_before_closing_any() -> None:
    paths = {0: relay(40), 1: v4(V4_2, 30)}
    assert plan_paths(v4(V4_1, 10), paths, is_client=True) == PathPlan(True, [], [0, 1], [])
    assert plan_paths(v4(V4_1, 10), paths, is_client=False) == PathPlan(False, [], [0, 1], [])


def test_plan_on_the_relay_keeps_the_ip_paths() -> None:
    paths = {0: relay(40), 1: v4(V4_1, None), 2: v4(V4_2, None)}
    assert plan_paths(paths[0], paths, is_client=True) == PathPlan(False, [0], [1, 2], [])
