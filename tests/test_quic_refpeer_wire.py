"""The wire layer reads what Rust iroh 1.x (the official `iroh` package) actually sends: its
client Initial opens with our Initial keys, its frames decode, and the transport parameters in
its ClientHello are exactly ``TransportParameters.iroh()``."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from irohpy.quic import crypto, frames, packet
from irohpy.quic.transport_params import TransportParameters
from tests.refpeer import bind_ref

pytestmark = pytest.mark.refpeer

ALPN = b"irohpy/quic-wire/0"
T = 10


class _Catch(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.put_nowait(data)


def _extension(hello: bytes, wanted: int) -> bytes:
    assert hello[0] == 1  # ClientHello
    pos = 4 + 2 + 32
    pos += 1 + hello[pos]
    pos += 2 + int.from_bytes(hello[pos : pos + 2], "big")
    pos += 1 + hello[pos]
    end = pos + 2 + int.from_bytes(hello[pos : pos + 2], "big")
    pos += 2
    while pos < end:
        ext_type = int.from_bytes(hello[pos : pos + 2], "big")
        length = int.from_bytes(hello[pos + 2 : pos + 4], "big")
        if ext_type == wanted:
            return hello[pos + 4 : pos + 4 + length]
        pos += 4 + length
    raise AssertionError(f"no extension {wanted}")


async def test_rust_iroh_initial_decodes_and_its_transport_parameters_are_irohs(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    loop = asyncio.get_running_loop()
    transport, catcher = await loop.create_datagram_endpoint(_Catch, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    ref = await bind_ref(iroh, [ALPN])
    dial: asyncio.Task[object] | None = None
    try:
        target = iroh.EndpointAddr(iroh.SecretKey.generate().public(), None, [f"127.0.0.1:{port}"])
        dial = asyncio.create_task(asyncio.wait_for(ref.connect(target, ALPN), T))
        first = await asyncio.wait_for(catcher.datagrams.get(), T)
    finally:
        await ref.close()
        if dial is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(dial, T)
        transport.close()

    assert len(first) >= packet.MIN_INITIAL_DATAGRAM
    parts = packet.split_datagram(first, 8)
    initial = parts[0]
    assert initial.packet_type == packet.PACKET_INITIAL and initial.version == packet.VERSION_1
    assert len(initial.dcid) >= 8 and len(initial.scid) == 8
    _, server_recv = crypto.initial_protection(initial.dcid, is_client=False)
    packet.unprotect_headers([initial], server_recv.hp, -1)
    decoded = frames.decode_frames(packet.open_packet(server_recv.key, initial), packet.PACKET_INITIAL)
    chunks = sorted((f.offset, f.data) for f in decoded if isinstance(f, frames.Crypto))
    assert chunks and chunks[0][0] == 0
    hello = b""
    for offset, data in chunks:
        assert offset == len(hello)
        hello += data
    params = TransportParameters.decode(_extension(hello, 0x39), from_server=False)
    assert params == TransportParameters.iroh(initial.scid)
