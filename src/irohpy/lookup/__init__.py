"""Address lookup: resolve an EndpointId to its relay and addresses."""

from __future__ import annotations

from irohpy.lookup.base import AddressLookup, EndpointData, EndpointInfo, LookupItem

__all__ = ["AddressLookup", "EndpointData", "EndpointInfo", "LookupItem"]
