"""The least one idle PING/ACK exchange can cost in Python: ``python -m bench.idle_floor``.

An idle connection costs its server one exchange per keep-alive period: a PING comes in, an ACK
goes out. Whatever the implementation, that is a receive, a header-protection mask and an
AEAD open, then an AEAD seal, a mask and a send. At 10,000 connections and a 5 s keep-alive
(2,000 exchanges a second), each microsecond of an exchange is 0.2% of a core. Two floors:

- the six C calls alone, back to back on real loopback UDP with AES-128-GCM from
  ``cryptography``: no parsing, no state, no event loop;
- ``--loop``: the same calls in an asyncio reader that drains the socket at each wake-up (as
  irohpy's socket layer does), fed by a peer in another process that sends ``--rate`` PINGs a
  second, ``--burst`` at a time. With bursts of one (independent clients, whose keep-alives are
  spread in time) every exchange also pays an event-loop wake-up. The process's user and
  system CPU, as ``getrusage`` reports it, is what any asyncio server pays before it parses a
  single frame;
- ``--loop --quic``: the same reader doing the least a QUIC server can do with real 1-RTT
  packets from ``--connections`` connections (each with its own keys): find the connection by
  its DCID, unmask the header, decode the packet number, open the packet, walk its frames
  (the peer's ACK, PING, PADDING), track what was received, and answer with a sealed,
  header-protected ACK; idle deadlines are swept once a second instead of kept in a timer
  heap. No streams, congestion control or loss detection: no implementation can do less
  and still be QUIC, so what it costs over ``--loop`` is the Python every exchange needs;
- ``--quic`` alone: that minimal exchange in memory, without sockets or event loop, beside
  which ``python -m bench.quic_idle --exchange`` puts irohpy's engine doing the same;
- ``--loop --echo c|blocking|asyncio``: below all of these, a server that only sends each
  datagram straight back, fed by the same paced peer. ``c`` is ``bench/echo_floor.c`` (an
  epoll loop, built with the machine's ``cc``), ``blocking`` a Python ``recvfrom``/``sendto``
  loop, ``asyncio`` a Python reader callback. What they cost per datagram is the machine's price
  of a wake-up and two system calls: the C one is what any implementation pays, the Python ones
  what any Python server pays, before a single byte is decrypted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HEADER = 9  # a short header: flags, 4-byte connection ID, up to 4 bytes of packet number
SAMPLE = 16


def _drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(2048)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def run(batches: int, batch: int) -> list[float]:
    """Microseconds per exchange, one number per batch of ``batch`` exchanges."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        server.bind(("127.0.0.1", 0))
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        aead = AESGCM(os.urandom(16))
        hp = Cipher(algorithms.AES(os.urandom(16)), modes.ECB())
        nonce, header = os.urandom(12), os.urandom(HEADER)
        ping = header + aead.encrypt(nonce, b"\x01" + bytes(20), header)  # PING, padded
        ack = b"\x02\x00\x00\x00\x00"  # ACK of one packet
        target = server.getsockname()
        out = []
        for _ in range(batches):
            for _ in range(batch):
                peer.sendto(ping, target)
            start = time.perf_counter()
            for _ in range(batch):
                data, addr = server.recvfrom(2048)
                mask = hp.encryptor()
                mask.update(data[HEADER:HEADER + SAMPLE])
                mask.finalize()
                aead.decrypt(nonce, data[HEADER:], data[:HEADER])
                sealed = aead.encrypt(nonce, ack, header)
                mask = hp.encryptor()
                mask.update(sealed[:SAMPLE])
                mask.finalize()
                server.sendto(header + sealed, addr)
            out.append((time.perf_counter() - start) / batch * 1e6)
            _drain(peer)
        return out
    finally:
        peer.close()
        server.close()


class _Exchange:
    """Answers each PING with an ACK through the six C calls of :func:`run`, draining the
    socket at each wake-up as irohpy's socket layer does (asyncio's own datagram transport
    reads one datagram per wake-up)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.aead = AESGCM(os.urandom(16))
        self.hp = Cipher(algorithms.AES(os.urandom(16)), modes.ECB())
        self.nonce, self.header = os.urandom(12), os.urandom(HEADER)
        self.count = 0

    def ping(self) -> bytes:
        return self.header + self.aead.encrypt(self.nonce, b"\x01" + bytes(20), self.header)

    def on_readable(self) -> None:
        sock, aead, hp, nonce, header = self.sock, self.aead, self.hp, self.nonce, self.header
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                return
            mask = hp.encryptor()
            mask.update(data[HEADER:HEADER + SAMPLE])
            mask.finalize()
            aead.decrypt(nonce, data[HEADER:], data[:HEADER])
            sealed = aead.encrypt(nonce, b"\x02\x00\x00\x00\x00", header)
            mask = hp.encryptor()
            mask.update(sealed[:SAMPLE])
            mask.finalize()
            sock.sendto(header + sealed, addr)
            self.count += 1


CID = 8
IDLE_TIMEOUT = 30.0


def _varint(v: int) -> bytes:
    if v < 0x40:
        return bytes((v,))
    if v < 0x4000:
        return (v | 0x4000).to_bytes(2, "big")
    return (v | 0x80000000).to_bytes(4, "big")


def _keys(index: int) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes]:
    """One connection's DCID, then key, IV and header-protection key for each direction
    (client to server, server to client), the same in the peer and the server."""
    a = hashlib.sha512(b"idle-floor client %d" % index).digest()
    b = hashlib.sha512(b"idle-floor server %d" % index).digest()
    return a[:CID], a[8:24], a[24:36], a[36:52], b[:16], b[16:28], b[28:44]


class _Conn:
    __slots__ = ("cid", "aead_in", "iv_in", "hp_in", "aead_out", "iv_out", "hp_out", "largest", "first",
                 "next_pn", "acked", "idle_at")

    def __init__(self, index: int) -> None:
        cid, k1, iv1, hp1, k2, iv2, hp2 = _keys(index)
        self.cid = cid
        self.aead_in, self.iv_in = AESGCM(k1), int.from_bytes(iv1, "big")
        self.hp_in = Cipher(algorithms.AES(hp1), modes.ECB()).encryptor()
        self.aead_out, self.iv_out = AESGCM(k2), int.from_bytes(iv2, "big")
        self.hp_out = Cipher(algorithms.AES(hp2), modes.ECB()).encryptor()
        self.largest = -1  # largest packet number received; [first, largest] is contiguous
        self.first = 0
        self.next_pn = 0
        self.acked = -1
        self.idle_at = 0.0


def _client_packet(index: int, pn: int) -> bytes:
    """The peer's keep-alive on connection ``index``: ACK, PING, PADDING, header-protected."""
    cid, k1, iv1, hp1 = _keys(index)[:4]
    header = bytes((0x43,)) + cid + pn.to_bytes(4, "big")
    payload = b"\x02\x00\x00\x00\x00\x01" + bytes(4)
    sealed = AESGCM(k1).encrypt((int.from_bytes(iv1, "big") ^ pn).to_bytes(12, "big"), payload, header)
    mask = Cipher(algorithms.AES(hp1), modes.ECB()).encryptor().update(sealed[:SAMPLE])
    pn_bytes = bytes(b ^ m for b, m in zip(header[1 + CID:], mask[1:5]))
    return bytes((header[0] ^ (mask[0] & 0x1F),)) + cid + pn_bytes + sealed


class _QuicExchange:
    """The least QUIC work per keep-alive (see the module's ``--quic``), on many connections."""

    def __init__(self, sock: socket.socket | None, connections: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self.sock = sock
        self.conns = {c.cid: c for c in (_Conn(i) for i in range(connections))}
        self.loop = loop
        self.count = 0
        self.expired = 0

    def sweep(self) -> None:
        """Once a second: the connections whose idle deadline passed (none should)."""
        assert self.loop is not None
        now = self.loop.time()
        self.expired += sum(1 for c in self.conns.values() if c.largest >= 0 and c.idle_at < now)
        self.loop.call_later(1.0, self.sweep)

    def on_readable(self) -> None:
        assert self.sock is not None and self.loop is not None
        sock, answer = self.sock, self.answer
        idle_at = self.loop.time() + IDLE_TIMEOUT
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                return
            reply = answer(data, idle_at)
            if reply is not None:
                sock.sendto(reply, addr)
                self.count += 1

    def answer(self, data: bytes, idle_at: float) -> bytes | None:
        """The ACK for one datagram, if it held a PING."""
        conn = self.conns.get(data[1 : 1 + CID])
        if conn is None or len(data) < 1 + CID + 4 + SAMPLE:
            return None
        mask = conn.hp_in.update(data[1 + CID + 4 : 1 + CID + 4 + SAMPLE])
        first = data[0] ^ (mask[0] & 0x1F)
        pn_len = (first & 3) + 1
        end = 1 + CID + pn_len
        truncated = int.from_bytes(data[1 + CID : end], "big") ^ int.from_bytes(mask[1 : 1 + pn_len], "big")
        # RFC 9000 §A.3: the packet number closest to the next one expected.
        expected = conn.largest + 1
        win = 1 << (8 * pn_len)
        pn = (expected & ~(win - 1)) | truncated
        if pn <= expected - win // 2:
            pn += win
        elif pn > expected + win // 2 and pn >= win:
            pn -= win
        header = bytes((first,)) + data[1:end - pn_len] + truncated.to_bytes(pn_len, "big")
        try:
            plain = conn.aead_in.decrypt((conn.iv_in ^ pn).to_bytes(12, "big"), data[end:], header)
        except InvalidTag:
            return None
        eliciting = False
        i, n = 0, len(plain)
        while i < n:
            t = plain[i]
            i += 1
            if t == 0x00:
                continue
            if t == 0x01:
                eliciting = True
                continue
            if t != 0x02:
                break  # a real server would handle the rest; this peer sends none
            fields = []
            for _ in range(4):  # largest, delay, range count, first range
                v = plain[i]
                size = 1 << (v >> 6)
                fields.append(int.from_bytes(plain[i : i + size], "big") & ((1 << (8 * size - 2)) - 1))
                i += size
            if fields[0] > conn.acked:
                conn.acked = fields[0]
        if pn == conn.largest + 1:
            conn.largest = pn
        elif pn > conn.largest:
            conn.largest, conn.first = pn, pn
        conn.idle_at = idle_at
        if not eliciting:
            return None
        out = conn.next_pn
        conn.next_pn = out + 1
        ack = b"\x02" + _varint(conn.largest) + b"\x00\x00" + _varint(conn.largest - conn.first)
        header = bytes((0x41,)) + conn.cid + (out & 0xFFFF).to_bytes(2, "big")
        sealed = conn.aead_out.encrypt((conn.iv_out ^ out).to_bytes(12, "big"), ack, header)
        mask = conn.hp_out.update(sealed[2 : 2 + SAMPLE])
        protected = bytes((0x41 ^ (mask[0] & 0x1F),)) + conn.cid + bytes((header[9] ^ mask[1], header[10] ^ mask[2]))
        return protected + sealed


def in_memory(connections: int, exchanges: int, reps: int = 5) -> list[float]:
    """Microseconds of :meth:`_QuicExchange.answer` per keep-alive, no sockets, one number per
    rep: the protocol's own minimum, to set beside ``python -m bench.quic_idle --exchange``."""
    packets = [_client_packet(i % connections, i // connections) for i in range(exchanges)]
    out = []
    for _ in range(reps):
        exchange = _QuicExchange(None, connections, None)
        answer = exchange.answer
        start = time.process_time()
        replies = sum(1 for data in packets if answer(data, 0.0) is not None)
        out.append((time.process_time() - start) / exchanges * 1e6)
        if replies != exchanges:
            raise RuntimeError(f"{exchanges - replies} keep-alives went unanswered")
    return out


def _quic_peer(target: tuple[str, int], connections: int, rate: int, burst: int, seconds: float, ready: Any) -> None:
    """Sends ``rate`` keep-alives a second over ``connections`` connections in turn, in bursts
    of ``burst``, evenly spaced, and drops the ACKs; packets are made ahead of time."""
    count = int(rate * seconds)
    packets = [_client_packet(i % connections, i // connections) for i in range(count)]
    _send_paced(target, packets, rate, burst, ready)


def _send_paced(target: tuple[str, int], packets: list[bytes], rate: int, burst: int, ready: Any) -> None:
    ready.set()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    interval = burst / rate
    start = time.monotonic()
    for i in range(0, len(packets), burst):
        delay = start + (i // burst) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for data in packets[i : i + burst]:
            sock.sendto(data, target)
        try:
            while True:
                sock.recv(2048)
        except BlockingIOError:
            pass
    sock.close()


def _peer(target: tuple[str, int], ping: bytes, rate: int, burst: int, seconds: float, ready: Any) -> None:
    """Sends ``rate`` copies of one PING a second in bursts of ``burst``, and drops the ACKs."""
    _send_paced(target, [ping] * int(rate * seconds), rate, burst, ready)


async def _serve(rate: int, burst: int, seconds: float, connections: int = 0) -> tuple[float, float, int]:
    """Server CPU (user, system seconds) over the middle of a paced run, and its exchanges;
    with ``connections``, the minimal QUIC exchange on that many connections."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    target = sock.getsockname()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proto: _Exchange | _QuicExchange
    if connections:
        proto = _QuicExchange(sock, connections, loop)
        proto.sweep()
        peer = ctx.Process(target=_quic_peer, args=(target, connections, rate, burst, seconds + 2.0, ready),
                           daemon=True)
    else:
        proto = _Exchange(sock)
        peer = ctx.Process(target=_peer, args=(target, proto.ping(), rate, burst, seconds + 2.0, ready), daemon=True)
    loop.add_reader(sock.fileno(), proto.on_readable)
    peer.start()
    try:
        if not await loop.run_in_executor(None, ready.wait, 120.0):
            raise RuntimeError("the peer did not start")
        await asyncio.sleep(1.0)
        before, count = resource.getrusage(resource.RUSAGE_SELF), proto.count
        await asyncio.sleep(seconds)
        after, count = resource.getrusage(resource.RUSAGE_SELF), proto.count - count
    finally:
        peer.join(timeout=seconds + 10.0)
        if peer.is_alive():
            peer.kill()
        loop.remove_reader(sock.fileno())
        sock.close()
    if isinstance(proto, _QuicExchange) and proto.expired:
        raise RuntimeError(f"{proto.expired} connections went idle")
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, count


ECHOES = ("c", "blocking", "asyncio")
#: About the size of a keep-alive packet: short header, PING, padding to the sample, tag.
ECHO_PING = b"\x40" + bytes(45)


def _echo_blocking(sock: socket.socket, seconds: float) -> tuple[int, float, float]:
    sock.settimeout(10.0)
    data, addr = sock.recvfrom(2048)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    sock.sendto(data, addr)
    count = 1
    while time.monotonic() - start < seconds:
        data, addr = sock.recvfrom(2048)
        sock.sendto(data, addr)
        count += 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    return count, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


async def _echo_asyncio(sock: socket.socket, seconds: float) -> tuple[int, float, float]:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    done: asyncio.Future[None] = loop.create_future()
    count = 0
    start = 0.0
    before = resource.getrusage(resource.RUSAGE_SELF)

    def on_readable() -> None:
        nonlocal count, start, before
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                break
            if not count:
                before, start = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            sock.sendto(data, addr)
            count += 1
        if count and time.monotonic() - start >= seconds and not done.done():
            done.set_result(None)

    loop.add_reader(sock.fileno(), on_readable)
    try:
        await asyncio.wait_for(done, seconds + 10.0)
    finally:
        loop.remove_reader(sock.fileno())
    after = resource.getrusage(resource.RUSAGE_SELF)
    return count, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def _echo_child(kind: str, sock: socket.socket, seconds: float, out: Any) -> None:
    if kind == "blocking":
        out.send(_echo_blocking(sock, seconds))
    else:
        out.send(asyncio.run(_echo_asyncio(sock, seconds)))


def _echo(kind: str, rate: int, burst: int, seconds: float) -> tuple[int, float, float]:
    """An echo server of ``kind`` in a process of its own, fed ``rate`` datagrams a second:
    (datagrams, user and system seconds) over ``seconds`` from its first datagram."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    target = sock.getsockname()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    peer = ctx.Process(target=_peer, args=(target, ECHO_PING, rate, burst, seconds + 2.0, ready), daemon=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if kind == "c":
                cc = shutil.which("cc") or shutil.which("gcc")
                if cc is None:
                    raise RuntimeError("--echo c needs a C compiler (cc)")
                binary = os.path.join(tmp, "echo_floor")
                source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo_floor.c")
                subprocess.run([cc, "-O2", "-o", binary, source], check=True)
                with subprocess.Popen([binary, str(sock.fileno()), str(seconds)], pass_fds=(sock.fileno(),),
                                      stdout=subprocess.PIPE, text=True) as server:
                    try:
                        peer.start()
                        out, _ = server.communicate(timeout=seconds + 30.0)
                    finally:
                        server.kill()
                count, user, system = out.split()
                return int(count), float(user), float(system)
            receiver, sender = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_echo_child, args=(kind, sock, seconds, sender), daemon=True)
            child.start()
            try:
                peer.start()
                if not receiver.poll(seconds + 30.0):
                    raise RuntimeError(f"the {kind} echo server did not report")
                result: tuple[int, float, float] = receiver.recv()
            finally:
                child.join(timeout=10.0)
                if child.is_alive():
                    child.kill()
            return result
        finally:
            if peer.pid is not None:
                peer.join(timeout=seconds + 10.0)
                if peer.is_alive():
                    peer.kill()
            sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--batch", type=int, default=1000, help="exchanges per batch (default 1000)")
    parser.add_argument("--loop", action="store_true", help="the asyncio server fed by a paced peer")
    parser.add_argument("--rate", type=int, default=2000, help="PINGs a second (default 2000)")
    parser.add_argument("--burst", type=int, default=1, help="PINGs sent together (default 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds measured (default 10)")
    parser.add_argument("--quic", action="store_true",
                        help="the least QUIC work per exchange: in memory, or with --loop in the asyncio server")
    parser.add_argument("--connections", type=int, default=10_000, help="with --quic: connections (default 10000)")
    parser.add_argument("--echo", choices=ECHOES,
                        help="with --loop: a server that only sends each datagram back (C, Python, asyncio)")
    args = parser.parse_args(argv)
    if args.loop and args.echo:
        count, user, system = _echo(args.echo, args.rate, args.burst, args.seconds)
        print(f"{args.echo} echo server, {args.rate} datagrams/s in bursts of {args.burst}: "
              f"{(user + system) / count * 1e6:.1f} µs per datagram ({count} datagrams); "
              f"{(user + system) / args.seconds * 100:.2f}% of a core")
        return 0
    if args.loop:
        connections = args.connections if args.quic else 0
        user, system, count = asyncio.run(_serve(args.rate, args.burst, args.seconds, connections))
        if not count:
            print("no exchange was measured")
            return 1
        share = (user + system) / args.seconds * 100
        what = f"minimal QUIC on {connections} connections" if connections else "C calls only"
        print(f"asyncio server ({what}), {args.rate} PINGs/s in bursts of {args.burst}: "
              f"{(user + system) / count * 1e6:.1f} µs per exchange "
              f"(user {user / count * 1e6:.1f}, system {system / count * 1e6:.1f}; {count} exchanges); "
              f"{share:.2f}% of a core")
        return 0
    if args.quic:
        times = in_memory(args.connections, 2 * args.connections)
        print(f"minimal QUIC exchange in memory ({args.connections} connections, no sockets): median "
              f"{statistics.median(times):.1f} µs (min {min(times):.1f}, max {max(times):.1f})")
        return 0
    times = run(args.batches, args.batch)
    median = statistics.median(times)
    print(f"one PING/ACK exchange, its C calls only: median {median:.1f} µs "
          f"(min {min(times):.1f}, max {max(times):.1f}, {args.batches} batches of {args.batch}); "
          f"{median * 0.2:.1f}% of a core at 10,000 connections and a 5 s keep-alive")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
