"""The QUIC engine on the socket layer: every QUIC path is a real network path.

A connection's paths are named by :data:`~irohpy.socket.paths.PathKey`: ``(host, port)`` for
UDP, a :class:`~irohpy.socket.paths.RelayPath` for a relay, so QUIC multipath and NAT
traversal see each way to the peer under its own identity, as in Rust iroh. One thing is
named otherwise: a dial starts at the remote's :class:`~irohpy.socket.mapped.MappedAddr`, whose
datagrams go down the remote's selected path, or every path we know while none is; the
client's connection then goes on on the path the server answered on (the core adopts it).

Receive bursts go straight to the engine, path and all (the transport's handler). The bridge
also runs the remotes' path checks, on one timer for the soonest.
"""

from __future__ import annotations

import asyncio

from irohpy.endpoint.engine import QuicEngine
from irohpy.socket.mapped import MappedAddr
from irohpy.socket.remote_map import INF, RemoteMap, RemoteState
from irohpy.socket.transport import Transport


class SocketBridge:
    """Feeds an engine the socket layer's bursts and sends its datagrams down their paths."""

    def __init__(self, transport: Transport, remotes: RemoteMap) -> None:
        self.transport = transport
        self.remotes = remotes
        self._engine: QuicEngine | None = None
        self._check: asyncio.TimerHandle | None = None
        self._check_at = INF
        remotes.on_changed = self.schedule

    @property
    def engine(self) -> QuicEngine:
        if self._engine is None:
            raise RuntimeError("no engine attached")
        return self._engine

    def attach(self, engine: QuicEngine) -> None:
        self._engine = engine

    # -- the engine's side ---------------------------------------------------------------

    def send(self, datagrams: list[bytes], addr: object) -> None:
        """The engine's sender: a path takes them as they are; a remote's mapped address (a
        dial's first flight) sends each down every path the remote's dials go to."""
        if isinstance(addr, MappedAddr):
            remote = self.remotes.get(addr)
            if remote is not None:
                for path in remote.dial_targets():
                    self.transport.send(path, datagrams)
            return
        self.transport.send(addr, datagrams)  # type: ignore[arg-type]

    # -- the socket layer's side ---------------------------------------------------------

    # -- the remotes' path checks --------------------------------------------------------

    def schedule(self, remote: RemoteState) -> None:
        """``remote`` changed: its next check may be sooner than the timer."""
        engine = self.engine
        if engine._closed:
            return
        remote.check_at = remote.next_check(engine._clock())
        self._arm(remote.check_at)

    def _arm(self, at: float) -> None:
        if at == INF or at >= self._check_at:
            return
        if self._check is not None:
            self._check.cancel()
        self._check_at = at
        self._check = asyncio.get_running_loop().call_at(at, self._on_check)

    def _on_check(self) -> None:
        self._check = None
        self._check_at = INF
        engine = self.engine
        if engine._closed:
            return
        now = engine._clock()
        soonest = INF
        for remote in self.remotes.active():
            if remote.check_at <= now:
                remote.on_timeout(now)
                remote.check_at = remote.next_check(now)
            soonest = min(soonest, remote.check_at)
        self._arm(soonest)

    def close(self) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None
        self._check_at = INF
