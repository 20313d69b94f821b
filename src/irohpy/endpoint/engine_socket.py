"""The QUIC engine on the socket layer: QUIC sees mapped addresses, the socket layer paths.

Every remote endpoint has one :class:`~irohpy.socket.mapped.MappedAddr`; the engine's
connections name their peer by it, and the socket layer picks the path (direct, relayed, or
every candidate while a dial has not heard back) for each send. Receive bursts arrive with the
path they came on and are renamed here to the mapped address of the connection their
destination CID routes to. What authenticated settles the paths' state:

- on the remote's selected path, once per burst (bytes received, heard);
- on any other path, datagram by datagram: only one that authenticated makes that path a
  candidate (hole punching, NAT rebinding), so a spoofed source address earns nothing.

Datagrams no connection owns keep their path, so the core's stateless answers (Version
Negotiation, Retry, stateless reset) go back the way they came and Retry tokens bind to the
path; a connection an Initial creates gets a provisional remote for its path. A short header
no CID routes that comes from a path a connection authenticated on goes to that connection's
mapped address, where the core checks it for the peer's stateless reset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from irohpy.endpoint.engine import EngineConnection, QuicEngine
from irohpy.quic import connection as qc
from irohpy.socket.mapped import MappedAddr
from irohpy.socket.paths import PathKey
from irohpy.socket.remote_map import RemoteMap, RemoteState
from irohpy.socket.transport import Transport


@dataclass(slots=True)
class _Burst:
    """One connection's datagrams on its remote's selected path within a receive burst."""

    remote: RemoteState
    path: PathKey
    mark: int
    nbytes: int = 0


@dataclass(slots=True)
class Traffic:
    """UDP payloads a connection received, whatever the path (for its stats)."""

    datagrams: int = 0
    bytes: int = 0


class SocketBridge:
    """Feeds an engine the socket layer's bursts and sends its datagrams down remote paths."""

    def __init__(self, transport: Transport, remotes: RemoteMap) -> None:
        self.transport = transport
        self.remotes = remotes
        self._engine: QuicEngine | None = None
        self._rx: dict[qc.QuicConnection, Traffic] = {}
        #: The mapped address whose connection last authenticated on each path: a short
        #: header no CID routes (a peer's stateless reset) is matched by it.
        self._path_owner: dict[PathKey, MappedAddr] = {}

    @property
    def engine(self) -> QuicEngine:
        if self._engine is None:
            raise RuntimeError("no engine attached")
        return self._engine

    def attach(self, engine: QuicEngine) -> None:
        self._engine = engine
        engine.on_new = self._on_new
        engine.on_gone = self._on_gone

    def received(self, quic: qc.QuicConnection) -> Traffic:
        """What ``quic`` received so far."""
        return self._rx.get(quic) or Traffic()

    # -- the engine's side ---------------------------------------------------------------

    def send(self, datagrams: list[bytes], addr: object) -> None:
        """The engine's sender: a mapped address goes down the remote's chosen path; a path
        (a stateless answer, or a connection's first flight) goes straight back down it."""
        if isinstance(addr, MappedAddr):
            self.transport.send(addr, datagrams)
            return
        for data in datagrams:
            self.transport.send_path(addr, data)  # type: ignore[arg-type]

    async def connect(
        self, remote: RemoteState, endpoint_id: bytes, alpn: bytes, *, timeout: float
    ) -> EngineConnection:
        """Dial ``remote`` over whatever paths it has; its mapped address is the peer QUIC sees."""
        remote.connections += 1
        return await self.engine.connect(remote.mapped, endpoint_id, alpn, timeout=timeout)

    def _on_new(self, conn: EngineConnection) -> None:
        path = conn.quic.peer_address
        remote = self.remotes.provisional(path)  # type: ignore[arg-type]
        remote.connections += 1
        self.engine.core.readdress(conn.quic, remote.mapped)

    def _on_gone(self, conn: EngineConnection) -> None:
        self._rx.pop(conn.quic, None)
        mapped = conn.quic.peer_address
        if isinstance(mapped, MappedAddr):
            self.remotes.release(mapped)
            for path in [p for p, m in self._path_owner.items() if m is mapped]:
                del self._path_owner[path]

    # -- the socket layer's side ---------------------------------------------------------

    def receive(self, batch: Sequence[tuple[bytes, PathKey]]) -> None:
        """A receive burst from the transport: renamed, then one engine pass."""
        engine = self.engine
        core = engine.core
        cid_length = core.config.transport.cid_length
        by_mapped = self.remotes.by_mapped
        rx = self._rx
        out: list[tuple[bytes, object]] = []
        bursts: dict[qc.QuicConnection, _Burst] = {}
        now = engine._clock()
        for data, path in batch:
            if not data:
                continue
            dcid = data[6 : 6 + data[5]] if data[0] & 0x80 and len(data) >= 6 else data[1 : 1 + cid_length]
            quic = core.route(dcid)
            mapped = quic.peer_address if quic is not None else None
            if quic is None or not isinstance(mapped, MappedAddr):
                owner = None if quic is not None or data[0] & 0x80 else self._path_owner.get(path)
                out.append((data, owner if owner is not None else path))
                continue
            traffic = rx.get(quic)
            if traffic is None:
                traffic = rx[quic] = Traffic()
            traffic.datagrams += 1
            traffic.bytes += len(data)
            remote = by_mapped.get(mapped)
            if remote is None or path == remote.paths.selected:
                if remote is not None:
                    burst = bursts.get(quic)
                    if burst is None:
                        burst = bursts[quic] = _Burst(remote, path, quic.recovery.bytes_received)
                    burst.nbytes += len(data)
                out.append((data, mapped))
                continue
            # Another path: this datagram alone says whether the path is the remote's.
            mark = quic.recovery.bytes_received
            core.receive([(data, mapped)], now)
            if quic.recovery.bytes_received != mark:
                remote.paths.on_authenticated(path, now)
                self._path_owner[path] = mapped
        engine.receive(out)
        for quic, burst in bursts.items():
            burst.remote.paths.received(burst.path, burst.nbytes)
            if quic.recovery.bytes_received != burst.mark:
                burst.remote.paths.heard(burst.path, now)
                mapped = quic.peer_address
                if isinstance(mapped, MappedAddr):
                    self._path_owner[burst.path] = mapped
