"""An abusive relay client in its own process: ``python -m tests.relay_attacker URL KIND SECONDS [...]``.

Running the attack in a separate process keeps its CPU off the process that measures the
well-behaved clients. It speaks WebSocket by hand on a plain stream and writes frames in
large pre-built runs, so one Python process floods far faster than a per-frame client could
(the relay, not the attacker, should be what limits the flood). Kinds:

- ``ping``: authenticate, then send Ping frames as fast as TCP takes them; count Pongs.
- ``batch``: authenticate, then send ``ClientToRelayDatagramBatch`` frames of ``--payload``
  bytes with segment size ``--segment`` to ``--to`` (an EndpointId) as fast as possible.
- ``idle``: open ``--sockets`` TCP connections to the relay port and send nothing.
- ``junk``: authenticate twice, then send junk QUIC Initials (issue 18, item 1) from one
  connection to the other, which reads them all and counts them in ``received``.

It stops by itself after SECONDS and prints one JSON line of counters on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import sys
from typing import Any
from urllib.parse import urlsplit

from irohpy import PublicKey, SecretKey
from irohpy.relay import protocol as p
from tests.attackers import junk_initial

RUN = 2000  # frames per write for small frames
JUNK_RUN = 100  # junk Initials per write


def ws_frame(payload: bytes) -> bytes:
    """A masked binary WebSocket frame (mask key zero: the payload goes out as is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x82, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x82, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\x00\x00\x00\x00" + payload


class FrameReader:
    """Server frames (unmasked) from a stream, counted by relay frame type."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def next(self) -> bytes:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
        payload = await self.reader.readexactly(n)
        if b0 & 0x0F == 0x8:
            raise ConnectionError("the relay closed the WebSocket")
        return payload


async def connect(url: str, source: str | None,
                  secret: SecretKey | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, FrameReader]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0) if source else None,
                                                   limit=1 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /relay HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Protocol: {p.SUBPROTOCOL_V2}\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"upgrade refused: {head[:60]!r}")
    frames = FrameReader(reader)
    challenge = p.decode(await frames.next())
    assert isinstance(challenge, p.ServerChallenge)
    writer.write(ws_frame(p.encode(p.answer_challenge(secret or SecretKey.generate(), challenge))))
    confirm = p.decode(await frames.next())
    if not isinstance(confirm, p.ServerConfirmsAuth):
        raise ConnectionError(f"handshake refused: {confirm!r}")
    return reader, writer, frames


async def _count_replies(frames: FrameReader, writer: asyncio.StreamWriter, counts: dict[str, Any]) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            payload = await frames.next()
            kind = payload[0] if payload else -1
            if kind == p.FrameType.PONG:
                counts["pongs"] += 1
            elif kind == p.FrameType.PING:
                writer.write(ws_frame(bytes([p.FrameType.PONG]) + payload[1:]))
            elif kind == p.FrameType.STATUS:
                counts["status"] += 1
            elif kind in (p.FrameType.RELAY_TO_CLIENT_DATAGRAM, p.FrameType.RELAY_TO_CLIENT_DATAGRAM_BATCH):
                frame = p.decode(payload)
                assert isinstance(frame, p.RelayToClient)
                counts["received"] += len(frame.datagrams())
    counts["closed"] = 1


async def _flood(args: argparse.Namespace, counts: dict[str, Any]) -> None:
    _, writer, frames = await connect(args.url, args.source)
    replies = asyncio.create_task(_count_replies(frames, writer, counts))
    if args.kind == "ping":
        per_write, run = RUN, ws_frame(p.encode(p.Ping(b"flooding"))) * RUN
    elif args.kind == "junk":
        per_write, run = JUNK_RUN, b"".join(ws_frame(p.encode(p.ClientToRelay(args.sink, 0, junk_initial())))
                                            for _ in range(JUNK_RUN))
    else:
        payload = b"\x00" * args.payload
        per_write, run = 1, ws_frame(p.encode(p.ClientToRelay(PublicKey.parse(args.to), 0, payload, args.segment)))
    try:
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(args.seconds):
                while not replies.done():
                    writer.write(run)
                    await writer.drain()
                    counts["sent"] += per_write
    finally:
        replies.cancel()
        await asyncio.gather(replies, return_exceptions=True)
        writer.transport.abort()


async def _idle(args: argparse.Namespace, counts: dict[str, Any]) -> None:
    parts = urlsplit(args.url)
    socks: list[socket.socket] = []
    try:
        for _ in range(args.sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            if args.source:
                sock.bind((args.source, 0))
            sock.connect((parts.hostname, parts.port))
            counts["sent"] += 1
        await asyncio.sleep(args.seconds)
        for sock in socks:  # which ones the relay closed on us
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    counts["closed"] += 1
            except BlockingIOError:
                pass
            except ConnectionResetError:
                counts["closed"] += 1
    finally:
        for sock in socks:
            sock.close()


async def _junk(args: argparse.Namespace, counts: dict[str, Any]) -> None:
    sink = SecretKey.generate()
    _, writer, frames = await connect(args.url, args.source, sink)
    drain = asyncio.create_task(_count_replies(frames, writer, counts))
    try:
        args.sink = sink.public()
        await _flood(args, counts)
        await asyncio.sleep(0.5)  # what the relay still had queued for the sink
    finally:
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        writer.transport.abort()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.relay_attacker")
    parser.add_argument("url")
    parser.add_argument("kind", choices=("ping", "batch", "idle", "junk"))
    parser.add_argument("seconds", type=float)
    parser.add_argument("--to", help="victim EndpointId (batch)")
    parser.add_argument("--segment", type=int, default=1)
    parser.add_argument("--payload", type=int, default=p.MAX_PACKET_SIZE - p.KEY_LEN - 3)
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--source", help="local IP to connect from")
    args = parser.parse_args(argv)
    counts: dict[str, Any] = {"sent": 0, "pongs": 0, "status": 0, "closed": 0, "received": 0}
    run = {"idle": _idle, "junk": _junk}.get(args.kind, _flood)
    try:
        await run(args, counts)
    except (OSError, asyncio.IncompleteReadError) as exc:
        counts["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
