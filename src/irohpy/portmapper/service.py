"""The port-mapping service: keeps one UDP port mapped on the default gateway, come what may.

It probes the gateway (PCP, NAT-PMP, UPnP IGD at once), maps with the first
protocol in iroh's order of preference, renews at half the lease, re-probes when
the gateway or our address changes (polled from ``/proc/net/route``), backs off
when nothing works, and deletes the mapping on close. :attr:`Portmapper.external`
is the current mapped address; ``on_change`` is called whenever it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from irohpy.errors import PortMapError, PortMapRefused
from irohpy.portmapper import mapping
from irohpy.portmapper.gateway import Home, find_home
from irohpy.portmapper.mapping import PREFERENCE, Mapping, Probe, Protocol
from irohpy.portmapper.metrics import PortmapMetrics

log = logging.getLogger(__name__)

HOME_POLL = 2.0
"""Seconds between looks at the default route (a new gateway or address means a new mapping)."""
MAP_TIMEOUT = 10.0
"""A whole mapping attempt (description fetch and SOAP calls included) never takes longer."""
PROBE_TIMEOUT = 5.0
RELEASE_TIMEOUT = 3.0
RETRY_MIN = 5.0
RETRY_MAX = 300.0


class Portmapper:
    """Maps ``local_port`` (UDP) on the default gateway until :meth:`close`.

    ``bound_ip`` is the address the socket is bound to: unless it is the wildcard, only a
    gateway reached from that very address is asked (a mapping to another would lead nowhere).
    """

    def __init__(self, local_port: int, *, bound_ip: str = "0.0.0.0", on_change: Callable[[], None] | None = None,
                 protocols: tuple[Protocol, ...] = PREFERENCE,
                 find_home: Callable[[], Home | None] = find_home, metrics: PortmapMetrics | None = None) -> None:
        self.local_port = local_port
        self._bound_ip = bound_ip
        self._on_change = on_change
        self._protocols = protocols
        self._find_home = find_home
        self.metrics = metrics or PortmapMetrics()
        self._loop = asyncio.get_running_loop()
        self._home: Home | None = None
        self._probe: Probe | None = None
        self._mapping: Mapping | None = None
        self._expires = 0.0
        self._next = 0.0
        self._failures = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._task = asyncio.ensure_future(self._run())

    @property
    def external(self) -> tuple[str, int] | None:
        """The mapped public address, or None."""
        return self._mapping.external if self._mapping is not None else None

    @property
    def mapping(self) -> Mapping | None:
        return self._mapping

    @property
    def probe(self) -> Probe | None:
        """What the last probe found, or None before the first one."""
        return self._probe

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            home = self._find_home()
            if home is not None and self._bound_ip not in ("0.0.0.0", home.local_ip):
                home = None
            if home != self._home or (self._mapping is not None and self._mapping.home != home):
                if self._mapping is not None:
                    log.info("network changed (gateway now %s): mapping again", home and home.gateway)
                    await self._drop()
                self._home, self._probe, self._failures = home, None, 0
                self._next = self._loop.time()
            if home is not None and self._loop.time() >= self._next:
                self._next = self._loop.time() + await self._step(home)
            await self._sleep(min(max(0.0, self._next - self._loop.time()), HOME_POLL))

    async def _sleep(self, seconds: float) -> None:
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait([waiter], timeout=seconds)
        finally:
            waiter.cancel()
        self._wake.clear()

    async def _step(self, home: Home) -> float:
        """One attempt to map or renew; returns the seconds until the next one."""
        current = self._mapping
        now = self._loop.time()
        if current is not None and now >= self._expires:
            log.info("port mapping %s expired", current.external)
            self._set(None)
            current = None
        if self._probe is None:
            self._probe = await self._probe_gateway(home)
        order = [current.protocol] if current is not None else self._probe.available()
        for protocol in order:
            self.metrics.mapping_attempts.inc()
            try:
                new = await asyncio.wait_for(
                    mapping.create(protocol, home, self.local_port, self._probe, current), MAP_TIMEOUT)
            except (PortMapError, PortMapRefused, TimeoutError, OSError) as exc:
                log.debug("%s mapping on %s failed: %s", protocol, home.gateway, exc)
                self.metrics.mapping_failures.inc()
                continue
            if current is None or new.external != current.external:
                log.info("port mapping via %s: %s:%d -> %s:%d", protocol, home.local_ip, self.local_port,
                         *new.external)
            self._failures = 0
            self._expires = self._loop.time() + new.lifetime
            self._set(new)
            return new.renew_after
        self._failures += 1
        retry = min(RETRY_MIN * 2 ** (self._failures - 1), RETRY_MAX)
        if current is not None:
            return min(retry, max(0.0, self._expires - self._loop.time()))
        self._probe = None
        return retry

    async def _probe_gateway(self, home: Home) -> Probe:
        m = self.metrics
        m.probes_started.inc()
        for protocol, counter in ((Protocol.PCP, m.pcp_probes), (Protocol.NAT_PMP, m.nat_pmp_probes),
                                  (Protocol.UPNP, m.upnp_probes)):
            if protocol in self._protocols:
                counter.inc()
        try:
            found = await asyncio.wait_for(mapping.probe(home, self._protocols), PROBE_TIMEOUT)
        except TimeoutError:
            found = Probe()
        log.debug("port mapping probe of %s: %s", home.gateway, found)
        for seen, counter in ((found.pcp, m.pcp_available), (found.nat_pmp, m.nat_pmp_available),
                              (found.upnp, m.upnp_available)):
            if seen:
                counter.inc()
        if Protocol.UPNP in self._protocols and not found.upnp:
            m.upnp_probes_failed.inc()
        return found

    def _set(self, new: Mapping | None) -> None:
        before = self.external
        self._mapping = new
        self.metrics.mapped.set(1 if new is not None else 0)
        if self.external != before:
            self.metrics.external_address_updated.inc()
            if self._on_change is not None:
                self._on_change()

    async def _drop(self) -> None:
        old = self._mapping
        self._set(None)
        if old is not None:
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(mapping.release(old), RELEASE_TIMEOUT)

    async def close(self) -> None:
        """Stop, and delete the mapping at the gateway (waiting at most a few seconds)."""
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._drop()
