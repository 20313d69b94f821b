"""Resolving EndpointIds through plain DNS: TXT records at ``_iroh.<z32-id>.<origin>``.

This is how iroh's N0 preset resolves (origin ``dns.iroh.link.``); point
``nameservers`` at your own ``irohpy dns-server`` to use it. Answers are
cached for their TTL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rdatatype
import dns.resolver

from irohpy.base.keys import EndpointId
from irohpy.errors import IrohError
from irohpy.lookup.attrs import parse_txt_strings
from irohpy.lookup.base import EndpointData, EndpointInfo, LookupItem

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 3.0
# iroh staggers its DNS attempts; a lost UDP answer should not cost a whole timeout.
RETRY_DELAYS = (0.0, 0.2, 0.5, 1.0)


class DnsAddressLookup:
    """Resolve through DNS at ``origin``, using ``nameservers`` ((host, port) pairs) or the system's."""

    def __init__(self, origin: str, *, nameservers: Sequence[tuple[str, int]] | None = None,
                 tcp: bool = False, timeout: float = QUERY_TIMEOUT) -> None:
        self.origin = origin if origin.endswith(".") else origin + "."
        self._nameservers = list(nameservers) if nameservers else None
        self._tcp = tcp
        self._timeout = timeout
        self._cache: dict[EndpointId, tuple[float, LookupItem]] = {}

    def name_for(self, endpoint_id: EndpointId) -> str:
        return f"_iroh.{endpoint_id.to_z32()}.{self.origin}"

    def publish(self, data: EndpointData) -> None:
        """DNS is read-only here; publish with a PkarrPublisher to the server behind it."""

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        cached = self._cache.get(endpoint_id)
        if cached is not None and cached[0] > time.monotonic():
            yield cached[1]
            return
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            try:
                strings, ttl = await self._query(self.name_for(endpoint_id))
            except (dns.exception.DNSException, OSError) as exc:
                log.debug("DNS lookup of %s failed: %s", endpoint_id.fmt_short(), exc)
                continue
            if not strings:
                return
            try:
                data = parse_txt_strings(strings)
            except IrohError as exc:
                log.info("ignoring bad _iroh records for %s: %s", endpoint_id.fmt_short(), exc)
                return
            item = LookupItem(EndpointInfo(endpoint_id, data), "dns")
            self._cache[endpoint_id] = (time.monotonic() + ttl, item)
            yield item
            return

    async def _query(self, name: str) -> tuple[list[str], int]:
        """TXT strings at ``name`` and their TTL; empty for NXDOMAIN or no records."""
        if self._nameservers is None:
            resolver = dns.asyncresolver.Resolver()
            try:
                answer = await resolver.resolve(name, "TXT", lifetime=self._timeout)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return [], 0
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer], answer.rrset.ttl
        host, port = self._nameservers[0]
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        if self._tcp:
            response = await dns.asyncquery.tcp(query, host, port=port, timeout=self._timeout)
        else:
            response = await dns.asyncquery.udp(query, host, port=port, timeout=self._timeout)
            if response.flags & dns.flags.TC:
                response = await dns.asyncquery.tcp(query, host, port=port, timeout=self._timeout)
        strings: list[str] = []
        ttl = 0
        for rrset in response.answer:
            if rrset.rdtype != dns.rdatatype.TXT:
                continue
            ttl = rrset.ttl
            strings += [b"".join(r.strings).decode("utf-8", "replace") for r in rrset]
        return strings, ttl

    async def close(self) -> None:
        self._cache.clear()
