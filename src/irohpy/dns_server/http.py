"""The pkarr relay over HTTP: ``PUT``/``GET /pkarr/{z32}`` and ``/healthz`` (iroh-dns-server's routes)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from irohpy.base.keys import PublicKey
from irohpy.dns_server.metrics import DnsServerMetrics
from irohpy.dns_server.ratelimit import PutRateLimiter
from irohpy.dns_server.store import PacketStore
from irohpy.errors import IrohError
from irohpy.lookup.pkarr import MAX_PACKET_LEN, SignedPacket, parse_dns

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-pkarr-signed-packet"
MAX_BODY = MAX_PACKET_LEN - 32
BODY_TIMEOUT = 10.0


def _key(request: web.Request) -> PublicKey:
    try:
        return PublicKey.from_z32(request.match_info["z32"])
    except IrohError as exc:
        raise web.HTTPBadRequest(text=f"invalid key: {exc}\n") from None


async def _read_body(request: web.Request) -> bytes:
    """The body, refusing with 400 (as iroh-dns-server does) once it passes the size limit."""
    body = b""
    while chunk := await request.content.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise web.HTTPBadRequest(text=f"signed packet is larger than {MAX_PACKET_LEN} bytes\n")
    return body


def _check_clock(packet: SignedPacket, now: float, max_skew: float) -> None:
    """Refuse a timestamp from the future: stored, it would make every honest publish 'not newer'."""
    ahead = packet.timestamp_us / 1e6 - now
    if ahead > max_skew:
        raise web.HTTPBadRequest(text=f"packet timestamp is {ahead:.0f} s ahead of this server's clock; "
                                      f"at most {max_skew:.0f} s of clock skew is accepted\n")


def pkarr_app(store: PacketStore, metrics: DnsServerMetrics, limiter: PutRateLimiter | None,
              max_future_skew: float) -> web.Application:
    async def put(request: web.Request) -> web.Response:
        if limiter is not None and not limiter.allow(request.remote or "", time.monotonic()):
            metrics.pkarr_puts.labels("rate_limited").inc()
            raise web.HTTPTooManyRequests(text="too many publishes from this address, slow down\n")
        try:
            key = _key(request)
            try:
                async with asyncio.timeout(BODY_TIMEOUT):
                    body = await _read_body(request)
            except TimeoutError:
                raise web.HTTPRequestTimeout(text="the request body did not arrive in time\n") from None
            try:
                packet = SignedPacket.from_relay_payload(key, body)
                packet.verify()
                parse_dns(packet.dns)
            except IrohError as exc:
                raise web.HTTPBadRequest(text=f"invalid signed packet: {exc}\n") from None
        except web.HTTPBadRequest:
            metrics.pkarr_puts.labels("invalid").inc()
            raise
        now = time.time()
        try:
            _check_clock(packet, now, max_future_skew)
        except web.HTTPBadRequest:
            metrics.pkarr_puts.labels("future_timestamp").inc()
            raise
        if not store.put(packet, now):
            metrics.pkarr_puts.labels("not_newer").inc()
            raise web.HTTPConflict(text="a packet with the same or a newer timestamp is already stored\n")
        metrics.pkarr_puts.labels("stored").inc()
        metrics.packets_stored.set(len(store))
        logger.debug("stored packet for %s at %d", key.fmt_short(), packet.timestamp_us)
        return web.Response(status=204)

    async def get(request: web.Request) -> web.Response:
        try:
            key = _key(request)
        except web.HTTPBadRequest:
            metrics.pkarr_gets.labels("invalid").inc()
            raise
        packet = store.get(key)
        if packet is None:
            metrics.pkarr_gets.labels("not_found").inc()
            raise web.HTTPNotFound(text="no packet stored for this key\n")
        metrics.pkarr_gets.labels("found").inc()
        return web.Response(body=packet.to_relay_payload(), headers={"Content-Type": CONTENT_TYPE})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def banner(request: web.Request) -> web.Response:
        return web.Response(text="irohpy dns-server: pkarr relay at /pkarr/{z32}\n")

    app = web.Application()
    app.router.add_put("/pkarr/{z32}", put)
    app.router.add_get("/pkarr/{z32}", get)
    app.router.add_get("/healthz", health)
    app.router.add_get("/", banner)
    return app


def metrics_app(metrics: DnsServerMetrics) -> web.Application:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app
