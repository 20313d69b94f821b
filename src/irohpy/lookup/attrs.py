"""The ``key=value`` TXT strings of an ``_iroh`` record set, to and from EndpointData.

Keys are ``relay``, ``addr`` (one record per address) and ``user-data``. An unknown key
fails the whole set, as in iroh; values that do not parse (e.g. custom transports) are
skipped, since EndpointData has no place for them.
"""

from __future__ import annotations

from collections.abc import Iterable

from irohpy.base.addr import IpAddr
from irohpy.base.relay_url import RelayUrl
from irohpy.errors import IrohError, PkarrError
from irohpy.lookup.base import MAX_USER_DATA, EndpointData

RELAY = "relay"
ADDR = "addr"
USER_DATA = "user-data"
KEYS = frozenset({RELAY, ADDR, USER_DATA})


def to_txt_strings(data: EndpointData) -> list[str]:
    """One ``key=value`` string per relay URL, per address, and for the user data; sorted for stable bytes."""
    out = [f"{RELAY}={url}" for url in sorted(data.relay_urls)]
    out += [f"{ADDR}={addr}" for addr in sorted(data.ip_addrs)]
    if data.user_data is not None:
        if len(data.user_data.encode()) > MAX_USER_DATA:
            raise PkarrError(f"user data is longer than {MAX_USER_DATA} bytes")
        out.append(f"{USER_DATA}={data.user_data}")
    return out


def parse_txt_strings(strings: Iterable[str]) -> EndpointData:
    """EndpointData from ``key=value`` strings; raises PkarrError on an unknown key or a missing ``=``."""
    relays: set[RelayUrl] = set()
    addrs: set[IpAddr] = set()
    user_data: str | None = None
    for text in strings:
        parts = text.split("=")
        if len(parts) < 2:
            raise PkarrError("an _iroh TXT string must look like key=value")
        key, value = parts[0], parts[1]
        if key not in KEYS:
            raise PkarrError(f"unknown _iroh attribute {key[:32]!r}")
        try:
            if key == RELAY:
                relays.add(RelayUrl(value))
            elif key == ADDR:
                addrs.add(IpAddr.parse(value))
            elif user_data is None and len(value.encode()) <= MAX_USER_DATA:
                user_data = value
        except IrohError:
            continue
    return EndpointData(frozenset(relays), frozenset(addrs), user_data)
