"""The transport: UDP sockets and relays, each path named by a :data:`PathKey`.

Outgoing datagrams name the path they take: a ``(host, port)`` goes out of the socket of its
family, a :class:`RelayPath` through the relay client. Incoming datagrams, from a socket or
a relay alike, are split by the QUIC fixed bit: set means QUIC, clear means anything else
(answers to our STUN requests).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from irohpy.socket.interfaces import route_source
from irohpy.socket.metrics import SocketMetrics
from irohpy.socket.paths import PathKey, RelayPath
from irohpy.socket.relay_transport import RelayTransport
from irohpy.socket.udp import SockAddr, UdpSocket

log = logging.getLogger(__name__)

PacketHandler = Callable[[list[tuple[bytes, PathKey]]], None]
ControlHandler = Callable[[bytes, PathKey], None]


class Transport:
    def __init__(self, on_packets: PacketHandler, metrics: SocketMetrics | None = None) -> None:
        self.metrics = metrics or SocketMetrics()
        self._on_packets = on_packets
        self.on_control: ControlHandler | None = None
        self.sockets: list[UdpSocket] = []
        self._v4: UdpSocket | None = None
        self._v6: UdpSocket | None = None
        self._own: set[SockAddr] = set()
        self.relay: RelayTransport | None = None

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

    def source_ip(self, host: str) -> str | None:
        """The local address our datagrams to ``host`` leave from: the socket's own, or where
        it is bound to every address, the one the kernel's routes pick now."""
        sock = self._v6 if ":" in host else self._v4
        if sock is None:
            return None
        bound = sock.local_addr[0]
        return route_source(host) if ipaddress.ip_address(bound).is_unspecified else bound

    def receive_relayed(self, batch: list[tuple[bytes, RelayPath]]) -> None:
        self._receive(batch)  # type: ignore[arg-type]

    def _receive(self, batch: list[tuple[bytes, PathKey]], sock: UdpSocket | None = None) -> None:
        if any(not (d and d[0] & 0x40) for d, _ in batch):
            quic: list[tuple[bytes, PathKey]] = []
            for data, addr in batch:
                if data and data[0] & 0x40:
                    quic.append((data, addr))
                elif self.on_control is not None and data:
                    self.on_control(data, addr)
            batch = quic
        if batch:
            self._on_packets(batch)

    def send(self, path: PathKey, datagrams: list[bytes]) -> None:
        """Datagrams, in order, down one path; on a direct path in as few syscalls as the
        socket allows."""
        if isinstance(path, RelayPath):
            if self.relay is not None:
                for data in datagrams:
                    self.relay.send(path, data)
            return
        sock = self._v6 if ":" in path[0] else self._v4
        if sock is not None and path not in self._own:
            sock.send_batch(datagrams, path)

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
