"""Baseline: asyncio TCP + stdlib ssl (TLS 1.3), i.e. a kernel transport driven from Python.

A TCP connection is one stream, so a connection here plays the role of one
QUIC bidi stream. asyncio's TLS transport cannot half-close, so the client's
`finish` sends nothing (the bulk header carries the length) and the server's
`finish` closes the connection after its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from bench import common

SERVER_NAME = "localhost"


def _server_context() -> tuple[ssl.SSLContext, str]:
    """TLS 1.3 context with a fresh certificate; stdlib ssl only loads keys from files."""
    key, cert = common.self_signed_ed25519()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with tempfile.TemporaryDirectory(prefix="irohpy-bench-") as tmp:
        certfile, keyfile = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        certfile.write_bytes(cert_pem)
        keyfile.write_bytes(key_pem)
        ctx.load_cert_chain(certfile, keyfile)
    return ctx, cert_pem.decode()


class _Stream:
    """One TLS connection seen as a benchmark stream, from either side."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False

    async def read(self, n: int) -> bytes:
        if self._closed:
            return b""
        return await self._reader.read(n)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def read_exact(self, n: int) -> bytes:
        return await self._reader.readexactly(n)

    async def read_to_end(self, limit: int) -> bytes:
        data = await self._reader.read()
        if len(data) > limit:
            raise ValueError(f"reply longer than {limit} bytes")
        return data

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self._writer.wait_closed()


class _ServerStream(_Stream):
    async def finish(self) -> None:
        await self.close()


class _ClientStream(_Stream):
    async def finish(self) -> None:
        """Nothing to send: TLS over asyncio has no half-close."""

    async def open_stream(self) -> _ClientStream:
        return self

    def is_open(self) -> bool:
        return not self._closed and not self._reader.at_eof()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    stream = _ServerStream(reader, writer)
    try:
        await common.serve_stream(stream)
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        await stream.close()


async def serve(ready_cb: common.ReadyCallback, opts: common.Options) -> None:
    """Serve benchmark connections until cancelled."""
    ctx, cert_pem = _server_context()
    server = await asyncio.start_server(_handle, common.HOST, 0, ssl=ctx)
    async with server:
        port = server.sockets[0].getsockname()[1]
        ready_cb({"host": common.HOST, "port": port, "cert_pem": cert_pem})
        await server.serve_forever()


class _Dialer:
    """One client TLS context for all connections (TCP needs a socket per connection)."""

    stream_per_connection = True

    def __init__(self, info: common.ServerInfo) -> None:
        self._addr = (info["host"], info["port"])
        self._ctx = ssl.create_default_context(cadata=info["cert_pem"])
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_3

    async def connect(self) -> _ClientStream:
        reader, writer = await asyncio.open_connection(
            *self._addr, ssl=self._ctx, server_hostname=SERVER_NAME, local_addr=(common.HOST, 0)
        )
        return _ClientStream(reader, writer)

    async def connect_0rtt(self) -> None:
        """Not measured: stdlib ssl offers no TLS 1.3 early data."""

    async def aclose(self) -> None:
        """Nothing to release: each connection owns its socket."""


async def run_client(server_info: common.ServerInfo, args: common.Params,
                     opts: common.Options) -> dict[str, Any]:
    """Measure this server with the shared driver."""
    dialer = _Dialer(server_info)
    try:
        return await common.run_metrics(dialer, args)
    finally:
        await dialer.aclose()
