"""The transport: UDP sockets and relays below, mapped addresses above.

Outgoing datagrams name a :class:`MappedAddr`; the transport looks up the
remote and sends down its chosen path, direct or relayed (or every candidate
while a dial has not heard back, as iroh does). Incoming datagrams, from a
socket or a relay alike, are split by the QUIC fixed bit: set means QUIC,
clear means our own control packets (hole punching).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from irohpy.socket.mapped import MappedAddr
from irohpy.socket.metrics import SocketMetrics
from irohpy.socket.paths import PathKey, RelayPath
from irohpy.socket.relay_transport import RelayTransport
from irohpy.socket.remote_map import RemoteMap
from irohpy.socket.udp import SockAddr, UdpSocket

log = logging.getLogger(__name__)

PacketHandler = Callable[[list[tuple[bytes, PathKey]]], None]
ControlHandler = Callable[[bytes, PathKey], None]


class Transport:
    def __init__(self, remotes: RemoteMap, on_packets: PacketHandler, metrics: SocketMetrics | None = None) -> None:
        self.remotes = remotes
        self.metrics = metrics or SocketMetrics()
        self._on_packets = on_packets
        self.on_control: ControlHandler | None = None
        self.sockets: list[UdpSocket] = []
        self._v4: UdpSocket | None = None
        self._v6: UdpSocket | None = None
        self._own: set[SockAddr] = set()
        self.relay: RelayTransport | None = None
        self.control_received = 0

    def bind(self, addrs: list[SockAddr]) -> None:
        """Bind one socket per address; a failure closes what was bound and raises."""
        try:
            for host, port in addrs:
                sock = UdpSocket.bind(host, port, self._receive, self.metrics)
                self.sockets.append(sock)
                if ":" in sock.local_addr[0]:
                    self._v6 = self._v6 or sock
                else:
                    self._v4 = self._v4 or sock
                self._own.add(sock.local_addr)
        except BaseException:
            self.close()
            raise

    def local_addrs(self) -> list[SockAddr]:
        return [s.local_addr for s in self.sockets]

    def receive_relayed(self, batch: list[tuple[bytes, RelayPath]]) -> None:
        self._receive(batch)  # type: ignore[arg-type]

    def _receive(self, batch: list[tuple[bytes, PathKey]], sock: UdpSocket | None = None) -> None:
        if self.on_control is not None or any(not (d and d[0] & 0x40) for d, _ in batch):
            quic: list[tuple[bytes, PathKey]] = []
            for data, addr in batch:
                if data and data[0] & 0x40:
                    quic.append((data, addr))
                else:
                    self.control_received += 1
                    if self.on_control is not None and data:
                        self.on_control(data, addr)
            batch = quic
        if batch:
            self._on_packets(batch)

    def send(self, mapped: MappedAddr, datagrams: list[bytes]) -> None:
        """A connection's datagrams, in order, down the remote's chosen path (every
        candidate while a dial has not heard back); on a direct path in as few
        syscalls as the socket allows."""
        state = self.remotes.get(mapped)
        if state is None:
            return
        paths = state.paths
        selected = paths.selected
        if selected is None:
            for path in paths.send_targets():
                for data in datagrams:
                    self.send_path(path, data)
            return
        path_state = paths.paths.get(selected)
        if path_state is not None:
            path_state.bytes_sent += sum(map(len, datagrams))
        if isinstance(selected, RelayPath):
            for data in datagrams:
                self.send_path(selected, data)
            return
        sock = self._v6 if ":" in selected[0] else self._v4
        if sock is not None and selected not in self._own:
            sock.send_batch(datagrams, selected)

    def send_path(self, path: PathKey, data: bytes) -> None:
        if isinstance(path, RelayPath):
            if self.relay is not None:
                self.relay.send(path, data)
            return
        sock = self._v6 if ":" in path[0] else self._v4
        if sock is None or path in self._own:
            return
        sock.send(data, path)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        self._v4 = self._v6 = None
