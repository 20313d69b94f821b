"""Several lookup services as one: publish to all, resolve from all at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

from irohpy.base.keys import EndpointId
from irohpy.lookup.base import AddressLookup, EndpointData, LookupItem
from irohpy.lookup.metrics import AddressLookupMetrics, service_name

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 10.0


class CombinedLookup:
    """Results arrive as each source answers, tagged with its provenance; one failing source
    does not stop the others."""

    def __init__(self, lookups: Iterable[AddressLookup] = (), *, timeout: float = RESOLVE_TIMEOUT,
                 metrics: AddressLookupMetrics | None = None) -> None:
        self.lookups: list[AddressLookup] = list(lookups)
        self._timeout = timeout
        self.metrics = metrics or AddressLookupMetrics()

    def add(self, lookup: AddressLookup) -> None:
        self.lookups.append(lookup)

    def publish(self, data: EndpointData) -> None:
        for lookup in self.lookups:
            service = service_name(lookup)
            self.metrics.publishes.labels(service).inc()
            try:
                lookup.publish(data)
            except Exception:
                self.metrics.publish_failures.labels(service).inc()
                log.exception("publishing through %r failed", lookup)

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        if not self.lookups:
            return
        queue: asyncio.Queue[LookupItem | None] = asyncio.Queue()

        async def drain(lookup: AddressLookup) -> None:
            service = service_name(lookup)
            self.metrics.resolves.labels(service).inc()
            found = 0
            try:
                async for item in lookup.resolve(endpoint_id):
                    found += 1
                    self.metrics.resolve_results.labels(service).inc()
                    await queue.put(item)
            except Exception as exc:
                self.metrics.resolve_failures.labels(service).inc()
                log.debug("lookup %r failed for %s: %s", lookup, endpoint_id.fmt_short(), exc)
                found = -1
            finally:
                if found == 0:
                    self.metrics.resolve_empty.labels(service).inc()
                await queue.put(None)

        tasks = [asyncio.ensure_future(drain(lookup)) for lookup in self.lookups]
        pending = len(tasks)
        try:
            async with asyncio.timeout(self._timeout):
                while pending:
                    item = await queue.get()
                    if item is None:
                        pending -= 1
                    else:
                        yield item
        except TimeoutError:
            return
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await asyncio.gather(*(lookup.close() for lookup in self.lookups), return_exceptions=True)
