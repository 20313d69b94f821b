"""Publishing to and resolving from a pkarr relay over HTTP (iroh's PkarrPublisher/PkarrResolver).

The relay stores one signed packet per key: ``PUT /pkarr/<z32>`` with the
packet minus the key, ``GET`` to read it back. Everything is verified on the
way in, so the relay is trusted with availability only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp

from irohpy.base.keys import EndpointId, SecretKey
from irohpy.errors import IrohError
from irohpy.lookup.base import EndpointData, EndpointInfo, LookupItem
from irohpy.lookup.pkarr import SignedPacket, next_timestamp_us

log = logging.getLogger(__name__)

REPUBLISH_INTERVAL = 300.0
RETRY_MIN = 1.0
RETRY_MAX = 60.0
HTTP_TIMEOUT = 10.0
CONTENT_TYPE = "application/x-pkarr-signed-packet"

AddrFilter = Callable[[EndpointData], EndpointData]


def relay_only(data: EndpointData) -> EndpointData:
    """iroh's default: publish the home relay, never IP addresses."""
    return data.relay_only()


def everything(data: EndpointData) -> EndpointData:
    return data


def _url(base: str, endpoint_id: EndpointId) -> str:
    return f"{base.rstrip('/')}/{endpoint_id.to_z32()}"


class PkarrPublisher:
    """Publishes our signed record on every change and every 5 minutes, retrying with backoff."""

    def __init__(self, secret: SecretKey, pkarr_url: str, *, addr_filter: AddrFilter = relay_only,
                 republish_interval: float = REPUBLISH_INTERVAL) -> None:
        self._secret = secret
        self._url = pkarr_url
        self._filter = addr_filter
        self._interval = republish_interval
        self._data: EndpointData | None = None
        self._changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def publish(self, data: EndpointData) -> None:
        self._data = self._filter(data)
        self._changed.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
        retry = RETRY_MIN
        while True:
            self._changed.clear()
            data = self._data
            assert data is not None
            try:
                await self._put(data)
                retry = RETRY_MIN
                wait = self._interval
            except (aiohttp.ClientError, TimeoutError, OSError, IrohError) as exc:
                log.info("publishing to %s failed: %s", self._url, exc or type(exc).__name__)
                wait, retry = retry, min(retry * 2, RETRY_MAX)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    async def _put(self, data: EndpointData) -> None:
        assert self._session is not None
        packet = SignedPacket.sign(self._secret, EndpointInfo(self._secret.public(), data), next_timestamp_us())
        async with self._session.put(_url(self._url, self._secret.public()), data=packet.to_relay_payload(),
                                     headers={"Content-Type": CONTENT_TYPE}) as resp:
            if resp.status >= 300:
                raise IrohError(f"pkarr relay answered {resp.status}: {(await resp.text())[:200]}")
        self.published += 1

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        """A publisher resolves nothing; pair it with a PkarrResolver or DnsAddressLookup."""
        for item in ():
            yield item

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()


class PkarrResolver:
    """Resolves EndpointIds with ``GET /pkarr/<z32>`` on a pkarr relay."""

    def __init__(self, pkarr_url: str) -> None:
        self._url = pkarr_url
        self._session: aiohttp.ClientSession | None = None

    def publish(self, data: EndpointData) -> None:
        """A resolver publishes nothing."""

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
        async with self._session.get(_url(self._url, endpoint_id)) as resp:
            if resp.status != 200:
                return
            body = await resp.read()
        packet = SignedPacket.from_relay_payload(endpoint_id, body)
        packet.verify()
        yield LookupItem(packet.endpoint_info(), "pkarr", packet.timestamp_us)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
