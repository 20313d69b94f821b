"""One non-blocking UDP socket, read and written in bursts.

Per-datagram Python overhead, not crypto, bounds QUIC throughput in Python,
so both directions work in batches: reads drain the socket until it would
block and hand the whole burst up at once; writes hand the kernel a run of
same-size datagrams in one ``sendmsg`` with a UDP GSO segment size (Linux),
falling back to one datagram per syscall where the kernel refuses. Sends that
hit a full kernel buffer wait in a small bounded queue instead of being lost.

Receiving with UDP GRO was measured too and left out: on loopback it moved
the segmentation cost into the sender's ``sendmsg`` and saved nothing overall
(bench/results/latest.md, Analysis).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Sequence

from irohpy.socket.metrics import SocketMetrics

log = logging.getLogger(__name__)

SockAddr = tuple[str, int]
Receiver = Callable[[list[tuple[bytes, SockAddr]], "UdpSocket"], None]

RECV_BURST = 128
RECV_SIZE = 65536
BUFFER_BYTES = 4 * 1024 * 1024
SEND_QUEUE_MAX = 1024

# Linux's UDP socket options (include/uapi/linux/udp.h); Python 3.11 lacks names for them.
SOL_UDP = 17
UDP_SEGMENT = 103
GSO_MAX_SEGMENTS = 64
"""The kernel's UDP_MAX_SEGMENTS."""
GSO_MAX_BYTES = 65000
"""One GSO send must fit one IP datagram (64 KiB minus headers)."""
_U16 = struct.Struct("=H")

# Transient errors where UDP semantics say: drop and carry on.
_DROP_ERRNOS = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ENETDOWN,
    errno.EADDRNOTAVAIL,
    errno.EPERM,
    errno.EACCES,
    errno.EMSGSIZE,
    errno.EINVAL,
}
# What a kernel or device without GSO answers to a segmented send.
_NO_GSO_ERRNOS = {errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT}


def _gso_supported(sock: socket.socket) -> bool:
    """Whether the kernel knows UDP_SEGMENT (Linux 4.18+)."""
    if sys.platform != "linux":
        return False
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


class UdpSocket:
    """A bound UDP socket of one address family."""

    def __init__(self, sock: socket.socket, receiver: Receiver, metrics: SocketMetrics | None = None) -> None:
        self._sock = sock
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()
        self._fd = sock.fileno()
        self._send_queue: deque[tuple[bytes, SockAddr]] = deque()
        self._writer_added = False
        self._closed = False
        self.family = sock.family
        host, port = sock.getsockname()[:2]
        self.local_addr: SockAddr = (host, port)
        self.gso = _gso_supported(sock)
        self.sent_datagrams = 0
        self.sent_bytes = 0
        self.sent_syscalls = 0
        self.recv_datagrams = 0
        self.recv_bytes = 0
        self.dropped_sends = 0
        # Shared by every socket of this family: iroh counts traffic per path kind.
        m = metrics or SocketMetrics()
        v6 = sock.family == socket.AF_INET6
        self._m_sent_bytes = (m.send_ipv6 if v6 else m.send_ipv4).labels()
        self._m_recv_bytes = (m.recv_data_ipv6 if v6 else m.recv_data_ipv4).labels()
        self._m_sent = m.send_datagrams.labels("ipv6" if v6 else "ipv4")
        self._m_recv = m.recv_datagrams.labels("ipv6" if v6 else "ipv4")
        self._m_dropped = m.send_dropped.labels()
        self._loop.add_reader(self._fd, self._on_readable)

    @classmethod
    def bind(cls, host: str, port: int, receiver: Receiver, metrics: SocketMetrics | None = None) -> UdpSocket:
        """Bind a socket; IPv6 sockets are v6-only so each family has its own port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
                except OSError:
                    pass
            sock.setblocking(False)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock, receiver, metrics)

    # -- receive ---------------------------------------------------------------

    def _on_readable(self) -> None:
        batch: list[tuple[bytes, SockAddr]] = []
        recvfrom = self._sock.recvfrom
        for _ in range(RECV_BURST):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ICMP errors surface on the next read on Linux; they say
                # nothing about other peers, so skip and keep reading.
                if exc.errno in _DROP_ERRNOS:
                    continue
                log.warning("udp recv on %s failed: %s", self.local_addr, exc)
                break
            batch.append((data, addr[:2]))
        if batch:
            nbytes = sum(len(d) for d, _ in batch)
            self.recv_datagrams += len(batch)
            self.recv_bytes += nbytes
            self._m_recv.inc(len(batch))
            self._m_recv_bytes.inc(nbytes)
            self._receiver(batch, self)

    # -- send ------------------------------------------------------------------

    def send(self, data: bytes, addr: SockAddr) -> None:
        if self._closed:
            return
        if self._send_queue:
            self._enqueue(data, addr)
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._enqueue(data, addr)
            return
        except OSError as exc:
            if exc.errno not in _DROP_ERRNOS:
                log.debug("udp send to %s failed: %s", addr, exc)
            self.dropped_sends += 1
            self._m_dropped.inc()
            return
        self.sent_syscalls += 1
        self.sent_datagrams += 1
        self.sent_bytes += len(data)
        self._m_sent.inc()
        self._m_sent_bytes.inc(len(data))

    def send_batch(self, datagrams: Sequence[bytes], addr: SockAddr) -> None:
        """Send datagrams to one address in order, as few syscalls as GSO allows.

        A GSO send carries a run of datagrams of one size, the last of which
        may be shorter; the receiver sees them as separate datagrams.
        """
        if not self.gso or len(datagrams) < 2 or self._send_queue:
            for data in datagrams:
                self.send(data, addr)
            return
        i, n = 0, len(datagrams)
        while i < n:
            size = len(datagrams[i])
            j, total = i + 1, size
            limit = min(n, i + GSO_MAX_SEGMENTS)
            while j < limit and total + size <= GSO_MAX_BYTES:
                length = len(datagrams[j])
                if length > size:
                    break
                total += length
                j += 1
                if length < size:
                    break
            if j - i == 1:
                self.send(datagrams[i], addr)
                i = j
                continue
            if not self._send_segmented(datagrams[i:j], size, total, addr):
                for data in datagrams[i:]:
                    self.send(data, addr)
                return
            i = j

    def _send_segmented(self, run: Sequence[bytes], size: int, total: int, addr: SockAddr) -> bool:
        """One GSO sendmsg; False when the datagrams still need sending."""
        if self._closed:
            return True
        try:
            self._sock.sendmsg(run, [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, addr)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in _NO_GSO_ERRNOS:
                log.debug("udp GSO send to %s refused (%s); sending datagrams one by one", addr, exc)
                self.gso = False
            return False
        self.sent_syscalls += 1
        self.sent_datagrams += len(run)
        self.sent_bytes += total
        self._m_sent.inc(len(run))
        self._m_sent_bytes.inc(total)
        return True

    def _enqueue(self, data: bytes, addr: SockAddr) -> None:
        if len(self._send_queue) >= SEND_QUEUE_MAX:
            self.dropped_sends += 1
            self._m_dropped.inc()
            return
        self._send_queue.append((data, addr))
        if not self._writer_added:
            self._loop.add_writer(self._fd, self._on_writable)
            self._writer_added = True

    def _on_writable(self) -> None:
        queue = self._send_queue
        while queue:
            data, addr = queue[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.dropped_sends += 1
                self._m_dropped.inc()
            else:
                self.sent_syscalls += 1
                self.sent_datagrams += 1
                self.sent_bytes += len(data)
                self._m_sent.inc()
                self._m_sent_bytes.inc(len(data))
            queue.popleft()
        self._loop.remove_writer(self._fd)
        self._writer_added = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._writer_added:
            self._loop.remove_writer(self._fd)
        self._send_queue.clear()
        self._sock.close()

    def __repr__(self) -> str:
        return f"UdpSocket({self.local_addr[0]}:{self.local_addr[1]})"

