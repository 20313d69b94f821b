"""DNS over UDP and TCP (RFC 1035 / RFC 7766 framing): thin asyncio drivers around ``zone.answer``.

UDP answers pass the response-rate limiter (if any); TCP connections count against a
per-address cap before anything is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import cast

from irohpy.base.conn_cap import PerIpConnections
from irohpy.dns_server.rrl import ResponseRateLimiter, Verdict, truncated_reply

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
    def __init__(self, answerer: Answerer, observe: Observer, rrl: ResponseRateLimiter | None = None) -> None:
        self._answerer = answerer
        self._observe = observe
        self._rrl = rrl
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._rrl is not None:
            verdict = self._rrl.check(addr[0], asyncio.get_running_loop().time())
            if verdict is not Verdict.ANSWER:
                self._observe("udp", verdict.value)
                reply = truncated_reply(data) if verdict is Verdict.SLIP else None
                if reply is not None and self._transport is not None:
                    self._transport.sendto(reply, addr)
                return
        reply, result = _safe_answer(self._answerer, data, True)
        self._observe("udp", result)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP DNS socket error: %s", exc)


class TcpDns:
    """Serves length-prefixed queries on each connection until EOF or ``TCP_IDLE_TIMEOUT`` of silence."""

    def __init__(self, answerer: Answerer, observe: Observer, connections: PerIpConnections,
                 on_refused: Callable[[str], None]) -> None:
        self._answerer = answerer
        self._observe = observe
        self._connections = connections
        self._on_refused = on_refused
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        key = self._connections.admit(host)
        if key is None:
            self._on_refused(host)
            writer.transport.abort()
            return
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
            self._connections.release(key)
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
