"""A cap on open TCP connections per source address, for every listener of a server.

Counting happens in ``connection_made``, before a byte is read, so a client holding idle
sockets can exhaust its own share but not the server's file descriptors. IPv6 clients are
counted per /64, the block one subscriber usually gets, so rotating addresses within it
does not multiply the share. :class:`CappedProtocol` wraps any asyncio protocol factory
(aiohttp's request handler included); stream handlers call :meth:`PerIpConnections.admit`
themselves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import Any, cast

logger = logging.getLogger(__name__)

IPV6_PREFIX = 64


def client_key(host: str) -> str:
    """The address a connection counts against: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


def peer_host(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class PerIpConnections:
    """Open connections by client key; ``cap`` None means unlimited (still counted)."""

    def __init__(self, cap: int | None) -> None:
        if cap is not None and cap <= 0:
            raise ValueError("the per-address connection cap must be positive")
        self.cap = cap
        self._open: dict[str, int] = {}

    def admit(self, host: str) -> str | None:
        """The key to release later, or None if ``host`` already holds ``cap`` connections."""
        key = client_key(host)
        count = self._open.get(key, 0)
        if self.cap is not None and count >= self.cap:
            return None
        self._open[key] = count + 1
        return key

    def release(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def open_for(self, host: str) -> int:
        return self._open.get(client_key(host), 0)

    def __len__(self) -> int:
        """How many distinct client keys hold a connection now."""
        return len(self._open)


class CappedProtocol(asyncio.Protocol):
    """Delegates to ``inner`` once the connection is admitted; aborts it otherwise."""

    def __init__(self, inner: asyncio.Protocol, connections: PerIpConnections,
                 on_refused: Callable[[str], None]) -> None:
        self._inner = inner
        self._connections = connections
        self._on_refused = on_refused
        self._key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        host = peer_host(transport)
        self._key = self._connections.admit(host)
        if self._key is None:
            self._on_refused(host)
            transport.abort()
            return
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._key is None:
            return
        self._connections.release(self._key)
        self._key = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._key is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._key is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def capped_factory(factory: Callable[[], Any], connections: PerIpConnections,
                   on_refused: Callable[[str], None]) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server`` that applies ``connections``' cap."""
    return lambda: CappedProtocol(cast(asyncio.Protocol, factory()), connections, on_refused)
