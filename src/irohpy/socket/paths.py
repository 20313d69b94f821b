"""Paths: the ways to reach a remote endpoint, and how the API reports them.

A path is a direct UDP address ``(host, port)`` or a relay that the remote is connected to.
Each is a QUIC multipath path of its own; :mod:`irohpy.socket.remote_map` chooses among them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from irohpy.base.keys import EndpointId
from irohpy.base.relay_url import RelayUrl

DirectPath = tuple[str, int]


@dataclass(frozen=True)
class RelayPath:
    """Reaching a remote through a relay server it is connected to."""

    url: RelayUrl
    endpoint_id: EndpointId

    def __str__(self) -> str:
        return f"relay {self.url} to {self.endpoint_id.fmt_short()}"


PathKey = DirectPath | RelayPath


def is_relay(path: PathKey) -> bool:
    return isinstance(path, RelayPath)


def describe_path(path: PathKey) -> str:
    if isinstance(path, RelayPath):
        return str(path)
    host, port = path
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


PathKind = Literal["direct", "relay"]
EventKind = Literal["selected", "validated", "lost", "fallback"]


@dataclass(frozen=True)
class PathInfo:
    """One path of a connection, as ``Connection.paths()`` reports it (``rtt`` None before a
    sample)."""

    kind: PathKind
    addr: str
    rtt: float | None
    selected: bool
    validated: bool
    bytes_sent: int
    bytes_recv: int


@dataclass(frozen=True)
class PathEvent:
    """A change of a remote's paths: ``selected`` (traffic moved here), ``validated`` (a path
    opened), ``lost`` (a direct path closed) or ``fallback`` (a failing direct path left
    traffic on the relay)."""

    kind: EventKind
    path: PathInfo
    time: float


def offer(queue: asyncio.Queue[PathEvent | None], item: PathEvent | None) -> None:
    """Put ``item`` (None: the end) in a bounded event queue, dropping the oldest when it is
    full: a slow reader misses old events and never holds up the socket layer."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
