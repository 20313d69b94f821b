"""iroh-ping: the smallest useful protocol, wire-compatible with ``iroh/ping/0``.

The dialer opens a bidi stream, writes ``PING`` and finishes; the acceptor
answers ``PONG`` and finishes; the dialer closes the connection with code 0
and reason ``bye!``. The time from dialing to the answer is the round trip.
"""

from __future__ import annotations

import asyncio
import time

from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint, Target
from irohpy.errors import IrohError, ReadError

ALPN = b"iroh/ping/0"
PING = b"PING"
PONG = b"PONG"
TIMEOUT = 10.0


class Ping:
    """Both roles: register it with a Router to answer, call :meth:`ping` to ask."""

    def __init__(self, *, timeout: float = TIMEOUT) -> None:
        self._timeout = timeout
        self.pings_answered = 0

    async def accept(self, conn: Connection) -> None:
        async with asyncio.timeout(self._timeout):
            send, recv = await conn.accept_bi()
            request = await recv.read_to_end(len(PING))
            if request != PING:
                raise ReadError(f"expected PING, got {request[:16]!r}")
            await send.write_all(PONG)
            await send.finish()
            self.pings_answered += 1
        # The dialer closes once it has the answer; wait for that, bounded.
        async with asyncio.timeout(self._timeout):
            await conn.closed()

    async def ping(self, endpoint: Endpoint, target: Target) -> float:
        """Dial ``target``, exchange PING/PONG, and return the round trip in seconds.

        The time covers one request on an established connection; dialing
        is not counted, so the figure is comparable with iroh's.
        """
        conn = await endpoint.connect(target, ALPN, timeout=self._timeout)
        try:
            async with asyncio.timeout(self._timeout):
                start = time.perf_counter()
                send, recv = await conn.open_bi()
                await send.write_all(PING)
                await send.finish()
                answer = await recv.read_to_end(len(PONG))
                rtt = time.perf_counter() - start
            if answer != PONG:
                raise ReadError(f"expected PONG, got {answer[:16]!r}")
            return rtt
        except TimeoutError:
            raise IrohError(f"no PONG within {self._timeout:g} s") from None
        finally:
            conn.close(0, b"bye!")
