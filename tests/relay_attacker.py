"""An abusive relay client in its own process: ``python -m tests.relay_attacker URL KIND SECONDS [...]``.

Running the attack in a separate process keeps its CPU off the process that measures the
well-behaved clients. Kinds:

- ``ping``: authenticate, then send Ping frames as fast as TCP lets us; read (and count)
  every Pong.
- ``batch``: authenticate, then send ``ClientToRelayDatagramBatch`` frames of ``--payload``
  bytes with segment size ``--segment`` to ``--to`` (an EndpointId) as fast as possible.
- ``idle``: open ``--sockets`` TCP connections to the relay port and send nothing.

It stops by itself after SECONDS and prints one JSON line of counters on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from irohpy import PublicKey, SecretKey
from irohpy.relay import protocol as p


async def _authenticate(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url + "relay", protocols=p.SUBPROTOCOLS, max_msg_size=0, compress=0)
    secret = SecretKey.generate()
    version = p.version_of(ws.protocol or "")
    challenge = p.decode((await ws.receive()).data, version=version)
    assert isinstance(challenge, p.ServerChallenge)
    await ws.send_bytes(p.encode(p.answer_challenge(secret, challenge)))
    confirm = p.decode((await ws.receive()).data, version=version)
    assert isinstance(confirm, p.ServerConfirmsAuth), confirm
    return ws


async def _count_replies(ws: aiohttp.ClientWebSocketResponse, counts: dict[str, int]) -> None:
    while True:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.BINARY:
            counts["closed"] = 1
            return
        kind = msg.data[0]
        if kind == p.FrameType.PONG:
            counts["pongs"] += 1
        elif kind == p.FrameType.PING:
            await ws.send_bytes(bytes([p.FrameType.PONG]) + msg.data[1:])
        elif kind == p.FrameType.STATUS:
            counts["status"] += 1


async def _flood(args: argparse.Namespace, counts: dict[str, int]) -> None:
    connector = aiohttp.TCPConnector(local_addr=(args.source, 0) if args.source else None)
    async with aiohttp.ClientSession(connector=connector) as session:
        ws = await _authenticate(session, args.url)
        reader = asyncio.create_task(_count_replies(ws, counts))
        if args.kind == "ping":
            message = p.encode(p.Ping(b"flooding"))
        else:
            payload = b"\x00" * args.payload
            message = p.encode(p.ClientToRelay(PublicKey.parse(args.to), 0, payload, args.segment))
        try:
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(args.seconds):
                    while not ws.closed:
                        await ws.send_bytes(message)
                        counts["sent"] += 1
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await ws.close()


async def _idle(args: argparse.Namespace, counts: dict[str, int]) -> None:
    host, port = urlsplit(args.url).hostname, urlsplit(args.url).port
    socks: list[socket.socket] = []
    try:
        for _ in range(args.sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            if args.source:
                sock.bind((args.source, 0))
            sock.connect((host, port))
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


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.relay_attacker")
    parser.add_argument("url")
    parser.add_argument("kind", choices=("ping", "batch", "idle"))
    parser.add_argument("seconds", type=float)
    parser.add_argument("--to", help="victim EndpointId (batch)")
    parser.add_argument("--segment", type=int, default=1)
    parser.add_argument("--payload", type=int, default=p.MAX_PACKET_SIZE - p.KEY_LEN - 3)
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--source", help="local IP to connect from")
    args = parser.parse_args(argv)
    counts: dict[str, Any] = {"sent": 0, "pongs": 0, "status": 0, "closed": 0}
    try:
        await (_idle(args, counts) if args.kind == "idle" else _flood(args, counts))
    except (OSError, aiohttp.ClientError) as exc:
        counts["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
