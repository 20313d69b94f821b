"""Attack tools for the abuse tests, run as a separate process so the victim's figures are its own.

    python -m tests.attackers udp HOST PORT COUNT SECONDS
        COUNT junk QUIC Initials (well-formed long header, random payload) over SECONDS.
    python -m tests.attackers relay URL DST_HEX COUNT SECONDS
        the same through a relay, to the endpoint DST_HEX.
    python -m tests.attackers batch URL DST_HEX SEGMENT FRAMES SECONDS
        FRAMES raw relay batch frames of 64,000 bytes cut into SEGMENT-byte datagrams.
    python -m tests.attackers initials HOST PORT SERVER_ID_HEX COUNT SECONDS
        COUNT valid Initials (real ClientHellos) from fresh source ports, never continued.
    python -m tests.attackers stall HOST PORT PROVIDER_ID_HEX HASH_HEX IDENTITIES CONNS STREAMS SECONDS
        blobs requesters that never read: IDENTITIES endpoints, each with CONNS connections
        of STREAMS Get requests; held for SECONDS, then closed.

Each mode prints ``sent N`` and exits by itself.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

import aiohttp

from irohpy import Endpoint, EndpointAddr, EndpointId, TransportAddr, presets
from irohpy.base.keys import PublicKey, SecretKey
from irohpy.errors import IrohError
from irohpy.protocols.blobs.wire import ALPN as BLOBS_ALPN
from irohpy.protocols.blobs.wire import GetRequest
from irohpy.base.relay_url import RelayUrl
from irohpy.relay import protocol as p
from irohpy.relay.client import RelayClient
from irohpy.tls import IrohQuicConnection, quic_configuration

INITIAL_SIZE = 1200
BATCH_BYTES = 64_000


def junk_initial() -> bytes:
    """A QUIC v1 Initial header that parses, followed by bytes that decrypt under no key."""
    header = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + os.urandom(8) + bytes([8]) + os.urandom(8)
    header += b"\x00"  # no token
    length = INITIAL_SIZE - len(header) - 2
    header += (0x4000 | length).to_bytes(2, "big")
    return header + os.urandom(length)


def valid_initial(server_id: bytes) -> bytes:
    quic = IrohQuicConnection(
        configuration=quic_configuration(os.urandom(32), is_client=True, alpns=[b"x"], expected_peer=server_id),
        expected_peer=server_id,
    )
    quic.connect(("127.0.0.1", 9), 0.0)
    return quic.datagrams_to_send(0.0)[0][0]


def paced(count: int, seconds: float) -> list[float]:
    start = time.monotonic()
    return [start + seconds * i / count for i in range(count)]


def udp(host: str, port: int, count: int, seconds: float) -> int:
    datagrams = [junk_initial() for _ in range(count)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for at, data in zip(paced(count, seconds), datagrams, strict=True):
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.sendto(data, (host, port))
    return count


def initials(host: str, port: int, server_id: bytes, count: int, seconds: float) -> int:
    datagrams = [valid_initial(server_id) for _ in range(count)]
    for at, data in zip(paced(count, seconds), datagrams, strict=True):
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, (host, port))
    return count


async def _relay_client(session: aiohttp.ClientSession, url: str) -> RelayClient:
    client = RelayClient(RelayUrl.parse(url), SecretKey.generate(), session, lambda *_: None)
    if not await client.wait_connected(10.0):
        await client.close()
        raise SystemExit(f"error: cannot connect to relay {url}")
    return client


async def relay(url: str, dst: PublicKey, count: int, seconds: float) -> int:
    async with aiohttp.ClientSession() as session:
        client = await _relay_client(session, url)
        try:
            for at in paced(count, seconds):
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                client.send(dst, junk_initial())
            await asyncio.sleep(0.5)
        finally:
            await client.close()
    return count


async def batch(url: str, dst: PublicKey, segment: int, frames: int, seconds: float) -> int:
    async with aiohttp.ClientSession() as session:
        client = await _relay_client(session, url)
        try:
            ws = client._ws
            assert ws is not None
            for at in paced(frames, seconds):
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                payload = bytes([0x40 | (b & 0x3F) for b in os.urandom(BATCH_BYTES)])
                await ws.send_bytes(p.encode(p.ClientToRelay(dst, 0, payload, segment)))
            await asyncio.sleep(0.5)
        finally:
            await client.close()
    return frames * (-(-BATCH_BYTES // segment))


async def stall(host: str, port: int, provider: bytes, hash_: bytes, identities: int, conns: int, streams: int,
                seconds: float) -> int:
    addr = EndpointAddr(EndpointId.from_bytes(provider), frozenset({TransportAddr.Ip(host, port)}))
    request = GetRequest.blob(hash_).to_bytes()
    endpoints = [
        await Endpoint.bind(preset=presets.MINIMAL, bind_addrs=["127.0.0.1:0"]) for _ in range(identities)
    ]
    opened = 0
    held = []
    try:
        for ep in endpoints:
            for _ in range(conns):
                try:
                    conn = await ep.connect(addr, BLOBS_ALPN, timeout=10)
                    for _ in range(streams):
                        send, recv = await conn.open_bi()
                        await send.write(request)
                        await send.finish()
                        held.append(recv)
                        opened += 1
                except IrohError:
                    pass  # over the provider's connection cap
        print("ready", flush=True)
        await asyncio.sleep(seconds)
    finally:
        await asyncio.gather(*(ep.close() for ep in endpoints))
    return opened


def main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "udp":
        sent = udp(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "initials":
        sent = initials(args[0], int(args[1]), bytes.fromhex(args[2]), int(args[3]), float(args[4]))
    elif mode == "relay":
        sent = asyncio.run(relay(args[0], PublicKey.from_bytes(bytes.fromhex(args[1])), int(args[2]), float(args[3])))
    elif mode == "batch":
        sent = asyncio.run(batch(args[0], PublicKey.from_bytes(bytes.fromhex(args[1])), int(args[2]), int(args[3]),
                                 float(args[4])))
    elif mode == "stall":
        sent = asyncio.run(stall(args[0], int(args[1]), bytes.fromhex(args[2]), bytes.fromhex(args[3]), int(args[4]),
                                 int(args[5]), int(args[6]), float(args[7])))
    else:
        print(f"error: unknown mode {mode}", file=sys.stderr)
        return 2
    print(f"sent {sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
