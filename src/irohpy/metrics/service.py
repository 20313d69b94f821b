"""Serving a registry over HTTP for Prometheus to scrape (``/metrics``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from irohpy.metrics.registry import OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, Registry


def metrics_handler(registry: Registry) -> web.Application:
    """An aiohttp app answering ``GET /metrics``; OpenMetrics when the scraper asks for it."""

    async def serve(request: web.Request) -> web.Response:
        if "application/openmetrics-text" in request.headers.get("Accept", ""):
            body, ctype = registry.encode_openmetrics(), OPENMETRICS_CONTENT_TYPE
        else:
            body, ctype = registry.encode_prometheus(), PROMETHEUS_CONTENT_TYPE
        return web.Response(body=body, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app


def parse_addr(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (port 0 picks a free one)."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {spec!r}")
    return host.strip("[]"), int(port)


@asynccontextmanager
async def serve_metrics(addr: str | tuple[str, int], registry: Registry) -> AsyncIterator[str]:
    """Serve ``registry`` on ``addr`` while the block runs; yields the scrape URL."""
    host, port = parse_addr(addr) if isinstance(addr, str) else addr
    runner = web.AppRunner(metrics_handler(registry), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        bound = server.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        yield f"http://{shown}:{bound[1]}/metrics"
    finally:
        await runner.cleanup()
