"""Endpoint hooks: observe and veto connections, as iroh's ``EndpointHooks``.

Hooks run in the order they were added and the first :class:`Reject` wins.
They see a read-only :class:`ConnectionInfo`, never the connection itself,
so a policy cannot accidentally hold streams open or write to the peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from irohpy.base.addr import EndpointAddr
from irohpy.base.keys import EndpointId

if TYPE_CHECKING:
    from irohpy.endpoint.connection import Connection, ConnectionStats, Side


@dataclass(frozen=True)
class Accept:
    """Let the connection proceed."""


@dataclass(frozen=True)
class Reject:
    """Refuse: ``connect`` fails with LocallyRejected; an accepted connection closes with the code."""

    error_code: int = 0
    reason: bytes = b""


Outcome = Accept | Reject
ACCEPT = Accept()


class ConnectionInfo:
    """What a hook may know about a connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def remote_id(self) -> EndpointId:
        assert self._conn.remote_id is not None
        return self._conn.remote_id

    @property
    def alpn(self) -> bytes:
        assert self._conn.alpn is not None
        return self._conn.alpn

    @property
    def side(self) -> Side:
        return self._conn.side

    @property
    def rtt(self) -> float:
        return self._conn.rtt

    def stats(self) -> ConnectionStats:
        return self._conn.stats()

    def __repr__(self) -> str:
        return f"ConnectionInfo(remote={self.remote_id.fmt_short()}, alpn={self.alpn!r}, side={self.side.value})"


class EndpointHooks:
    """Subclass and override either method; the defaults accept everything."""

    async def before_connect(self, remote_addr: EndpointAddr, alpn: bytes) -> Outcome:
        return ACCEPT

    async def after_handshake(self, conn: ConnectionInfo) -> Outcome:
        return ACCEPT
