"""Relays: configuration now; the protocol, server and client join with the relay issue."""

from __future__ import annotations

from irohpy.relay.map import RelayConfig, RelayMap, RelayMode

__all__ = ["RelayConfig", "RelayMap", "RelayMode"]
