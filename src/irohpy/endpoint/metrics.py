"""Endpoint metrics: how connections travel, and how hole punching fares."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EndpointMetrics:
    """A snapshot from ``Endpoint.metrics()``.

    ``holepunch_attempts`` counts punching rounds (candidates sent over the relay and pinged),
    ``holepunch_successes`` the times a remote went from relay to a validated direct path,
    ``time_to_direct`` how long each of those took from the first round, and
    ``fallbacks_to_relay`` the direct paths that died and left traffic on the relay.
    """

    holepunch_attempts: int = 0
    holepunch_successes: int = 0
    fallbacks_to_relay: int = 0
    time_to_direct: list[float] = field(default_factory=list)
    control_rejected: int = 0
    bytes_sent_relay: int = 0
    bytes_recv_relay: int = 0
    bytes_sent_direct: int = 0
    bytes_recv_direct: int = 0
