"""Publishing to and resolving from a pkarr relay over HTTP (iroh's PkarrPublisher/PkarrResolver).

The relay stores one signed packet per key: ``PUT /pkarr/<z32>`` with the
packet minus the key, ``GET`` to read it back. Everything is verified on the
way in, so the relay is trusted with availability only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from irohpy.base.keys import EndpointId, SecretKey
from irohpy.errors import IrohError
from irohpy.lookup.base import EndpointData, LookupItem
from irohpy.lookup.pkarr import SignedPacket
from irohpy.lookup.republish import AddrFilter, Republisher, everything, relay_only

REPUBLISH_INTERVAL = 300.0
HTTP_TIMEOUT = 10.0
CONTENT_TYPE = "application/x-pkarr-signed-packet"

__all__ = ["PkarrPublisher", "PkarrResolver", "everything", "relay_only"]


def _url(base: str, endpoint_id: EndpointId) -> str:
    return f"{base.rstrip('/')}/{endpoint_id.to_z32()}"


class PkarrPublisher(Republisher):
    """Publishes our signed record on every change and every 5 minutes, retrying with backoff."""

    errors = (aiohttp.ClientError, TimeoutError, OSError, IrohError)

    def __init__(self, secret: SecretKey, pkarr_url: str, *, addr_filter: AddrFilter = relay_only,
                 republish_interval: float = REPUBLISH_INTERVAL) -> None:
        super().__init__(secret, addr_filter=addr_filter, interval=republish_interval)
        self._url = pkarr_url
        self._session: aiohttp.ClientSession | None = None

    def __str__(self) -> str:
        return f"the pkarr relay {self._url}"

    async def _send(self, packet: SignedPacket) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
        async with self._session.put(_url(self._url, packet.public_key), data=packet.to_relay_payload(),
                                     headers={"Content-Type": CONTENT_TYPE}) as resp:
            if resp.status >= 300:
                raise IrohError(f"pkarr relay answered {resp.status}: {(await resp.text())[:200]}")

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        """A publisher resolves nothing; pair it with a PkarrResolver or DnsAddressLookup."""
        for item in ():
            yield item

    async def close(self) -> None:
        await super().close()
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
