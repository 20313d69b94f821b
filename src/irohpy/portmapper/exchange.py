"""One request, one answer over UDP to the gateway, with retries and a hard deadline.

The socket is connected to the gateway, so the kernel drops datagrams from anyone
else. Answers that do not parse are skipped (a junk-sending gateway cannot end the
wait early or make it longer than the retries); a refusal ends it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from irohpy.errors import PortMapError

T = TypeVar("T")
RETRIES = (0.25, 0.5)
"""Seconds to wait after each send (RFC 6886 §3.1 starts at 250 ms and doubles)."""
MAX_DATAGRAM = 1100
QUEUE = 16


class _Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE)

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data[:MAX_DATAGRAM + 1])

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable: nobody listens; the deadline ends the wait


async def ask(gateway: str, port: int, local_ip: str, request: bytes, parse: Callable[[bytes], T],
              retries: Sequence[float] = RETRIES) -> T | None:
    """``parse`` of the first acceptable answer, or None when none came in time."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _Answers, local_addr=(local_ip, 0), remote_addr=(gateway, port))
    except OSError:
        return None
    try:
        for wait in retries:
            transport.sendto(request)
            deadline = loop.time() + wait
            while (left := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(proto.queue.get(), left)
                except TimeoutError:
                    break
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Python 3.11's wait_for returns an answer that raced our cancellation
                    # instead of raising: a gateway spraying answers must not keep us running.
                    raise asyncio.CancelledError
                try:
                    return parse(data)
                except PortMapError:
                    continue
        return None
    finally:
        transport.close()

