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
  single frame.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import socket
import statistics
import time

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


def _peer(target: tuple[str, int], ping: bytes, rate: int, burst: int, seconds: float) -> None:
    """Sends ``rate`` PINGs a second in bursts of ``burst``, evenly spaced, and drops the ACKs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    interval = burst / rate
    start = time.monotonic()
    bursts = int(seconds / interval)
    for i in range(bursts):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for _ in range(burst):
            sock.sendto(ping, target)
        try:
            while True:
                sock.recv(2048)
        except BlockingIOError:
            pass
    sock.close()


async def _serve(rate: int, burst: int, seconds: float) -> tuple[float, float, int]:
    """Server CPU (user, system seconds) over the middle of a paced run, and its exchanges."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    proto = _Exchange(sock)
    loop.add_reader(sock.fileno(), proto.on_readable)
    target = sock.getsockname()
    peer = multiprocessing.get_context("fork").Process(
        target=_peer, args=(target, proto.ping(), rate, burst, seconds + 2.0), daemon=True
    )
    peer.start()
    try:
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
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--batch", type=int, default=1000, help="exchanges per batch (default 1000)")
    parser.add_argument("--loop", action="store_true", help="the asyncio server fed by a paced peer")
    parser.add_argument("--rate", type=int, default=2000, help="PINGs a second (default 2000)")
    parser.add_argument("--burst", type=int, default=1, help="PINGs sent together (default 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds measured (default 10)")
    args = parser.parse_args(argv)
    if args.loop:
        user, system, count = asyncio.run(_serve(args.rate, args.burst, args.seconds))
        if not count:
            print("no exchange was measured")
            return 1
        share = (user + system) / args.seconds * 100
        print(f"asyncio server, {args.rate} PINGs/s in bursts of {args.burst}: "
              f"{(user + system) / count * 1e6:.1f} µs per exchange "
              f"(user {user / count * 1e6:.1f}, system {system / count * 1e6:.1f}; {count} exchanges); "
              f"{share:.2f}% of a core")
        return 0
    times = run(args.batches, args.batch)
    median = statistics.median(times)
    print(f"one PING/ACK exchange, its C calls only: median {median:.1f} µs "
          f"(min {min(times):.1f}, max {max(times):.1f}, {args.batches} batches of {args.batch}); "
          f"{median * 0.2:.1f}% of a core at 10,000 connections and a 5 s keep-alive")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
