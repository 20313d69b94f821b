"""Endpoint presets, as in iroh: a named bundle of relay and lookup settings.

``N0`` mirrors Rust iroh's default, number 0's public relays and DNS/pkarr
address lookup, so irohpy works on the internet out of the box. ``MINIMAL``
has neither: direct addresses only, what tests and local setups want.
"""

from __future__ import annotations

from dataclasses import dataclass

from irohpy.relay import defaults
from irohpy.relay.map import RelayMode


@dataclass(frozen=True)
class Preset:
    name: str
    relay_mode: RelayMode
    pkarr_relay: str | None = None
    dns_origin: str | None = None


MINIMAL = Preset("minimal", RelayMode.disabled())
N0 = Preset(
    "n0",
    RelayMode.default(),
    pkarr_relay=defaults.PROD_PKARR_RELAY,
    dns_origin=defaults.PROD_DNS_ORIGIN,
)
N0_DISABLE_RELAY = Preset(
    "n0-disable-relay",
    RelayMode.disabled(),
    pkarr_relay=defaults.PROD_PKARR_RELAY,
    dns_origin=defaults.PROD_DNS_ORIGIN,
)
