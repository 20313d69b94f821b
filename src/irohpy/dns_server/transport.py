"""DNS over UDP and TCP (RFC 1035 / RFC 7766 framing): thin asyncio drivers around ``zone.answer``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import cast

logger = logging.getLogger(__name__)

TCP_IDLE_TIMEOUT = 10.0
TCP_WRITE_TIMEOUT = 5.0

# wire, udp? -> (response or None, result word)
Answerer = Callable[[bytes, bool], tuple[bytes | None, str]]
Observer = Callable[[str, str], None]


def _safe_answer(answerer: Answerer, wire: bytes, udp: bool) -> tuple[bytes | None, str]:
    """A bug in answering one query must not take the listener down."""
    try:
        return answerer(wire, udp)
    except Exception:
        logger.exception("answering a DNS query failed")
        return None, "dropped"


class UdpDns(asyncio.DatagramProtocol):
    def __init__(self, answerer: Answerer, observe: Observer) -> None:
        self._answerer = answerer
        self._observe = observe
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply, result = _safe_answer(self._answerer, data, True)
        self._observe("udp", result)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP DNS socket error: %s", exc)


class TcpDns:
    """Serves length-prefixed queries on each connection until EOF or ``TCP_IDLE_TIMEOUT`` of silence."""

    def __init__(self, answerer: Answerer, observe: Observer) -> None:
        self._answerer = answerer
        self._observe = observe
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    (length,) = struct.unpack(">H", await reader.readexactly(2))
                    wire = await reader.readexactly(length)
                reply, result = _safe_answer(self._answerer, wire, False)
                self._observe("tcp", result)
                if reply is None:
                    break
                writer.write(struct.pack(">H", len(reply)) + reply)
                async with asyncio.timeout(TCP_WRITE_TIMEOUT):
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(TCP_WRITE_TIMEOUT):
                    await writer.wait_closed()

    async def close_all(self) -> None:
        """Cancel every connection's handler and wait for it to close its socket."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
