"""dumbpipe's protocol: a raw byte pipe over one bidi stream (``DUMBPIPEV0``).

The side that opens the stream writes the 5-byte ``hello`` first, so that
the stream exists for the acceptor before any user data flows; the acceptor
reads and discards it. With a custom ALPN there is no handshake, which lets
the pipe talk to any other iroh protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from irohpy.endpoint.streams import RecvStream, SendStream
from irohpy.errors import IrohError, ReadError

ALPN = b"DUMBPIPEV0"
HANDSHAKE = b"hello"
CHUNK = 64 * 1024
FLUSH_TIMEOUT = 10.0


class ByteReader(Protocol):
    async def read(self, n: int = ...) -> bytes: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...


async def send_handshake(send: SendStream) -> None:
    await send.write_all(HANDSHAKE)


async def recv_handshake(recv: RecvStream, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        hello = await recv.read_exact(len(HANDSHAKE))
    if hello != HANDSHAKE:
        raise ReadError(f"bad dumbpipe handshake {hello!r}")


async def copy_to_stream(reader: ByteReader, send: SendStream) -> None:
    """Local bytes → QUIC until local EOF, then FIN."""
    while data := await reader.read(CHUNK):
        await send.write(data)
    await send.finish()


async def copy_from_stream(recv: RecvStream, writer: ByteWriter) -> None:
    """QUIC → local bytes until FIN, then half-close the local side if it can."""
    while data := await recv.read(CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


async def forward(
    reader: ByteReader, writer: ByteWriter, send: SendStream, recv: RecvStream
) -> None:
    """Pump both directions until both ends are done; a failure resets the stream."""
    tasks = [
        asyncio.ensure_future(copy_to_stream(reader, send)),
        asyncio.ensure_future(copy_from_stream(recv, writer)),
    ]
    try:
        await asyncio.gather(*tasks)
        # Both directions are done; closing now could drop our last bytes.
        async with asyncio.timeout(FLUSH_TIMEOUT):
            await send.stopped()
    except TimeoutError:
        pass
    except (IrohError, OSError):
        send.reset(0)
        recv.stop(0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
