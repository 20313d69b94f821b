"""The publishing side shared by pkarr relays and the DHT: sign our current
data, send it on every change and again at an interval, back off on failure."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable

from irohpy.base.keys import SecretKey
from irohpy.lookup.base import EndpointData, EndpointInfo
from irohpy.lookup.pkarr import SignedPacket, next_timestamp_us

log = logging.getLogger(__name__)

RETRY_MIN = 1.0
RETRY_MAX = 60.0

AddrFilter = Callable[[EndpointData], EndpointData]


def relay_only(data: EndpointData) -> EndpointData:
    """iroh's default: publish the home relay, never IP addresses."""
    return data.relay_only()


def everything(data: EndpointData) -> EndpointData:
    return data


class Republisher(abc.ABC):
    """Subclasses implement :meth:`_send` for one signed packet; failures raise ``errors``."""

    errors: tuple[type[BaseException], ...] = (OSError, TimeoutError)

    def __init__(self, secret: SecretKey, *, addr_filter: AddrFilter, interval: float) -> None:
        self._secret = secret
        self._filter = addr_filter
        self._interval = interval
        self._data: EndpointData | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def publish(self, data: EndpointData) -> None:
        self._data = self._filter(data)
        self._changed.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def __str__(self) -> str:
        return type(self).__name__

    @abc.abstractmethod
    async def _send(self, packet: SignedPacket) -> None:
        """Deliver one signed packet to wherever this publisher stores it."""

    async def _run(self) -> None:
        retry = RETRY_MIN
        while True:
            self._changed.clear()
            assert self._data is not None
            info = EndpointInfo(self._secret.public(), self._data)
            try:
                await self._send(SignedPacket.sign(self._secret, info, next_timestamp_us()))
                self.published += 1
                retry, wait = RETRY_MIN, self._interval
            except self.errors as exc:
                # A warning when publishing starts failing (others cannot find us by id); retries only at info.
                level = logging.WARNING if retry == RETRY_MIN else logging.INFO
                log.log(level, "publishing through %s failed: %s", self, exc or type(exc).__name__)
                wait, retry = retry, min(retry * 2, RETRY_MAX)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
