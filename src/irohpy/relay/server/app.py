"""The relay's HTTP surface: the ``/relay`` WebSocket upgrade and the probe endpoints (§4.7).

``relay_app`` serves everything on the relay's main port; ``portal_app`` is the plain-HTTP
captive-portal check that a TLS relay offers on its HTTP port; ``metrics_app`` is the
Prometheus endpoint on its own port.
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web

from irohpy import __version__
from irohpy.relay.protocol import MAX_MESSAGE_SIZE, SUBPROTOCOL_V1, SUBPROTOCOL_V2, negotiate_subprotocol, version_of
from irohpy.relay.server.access import AccessPolicy
from irohpy.relay.server.client import Client
from irohpy.relay.server.clients import Clients
from irohpy.relay.server.config import ServerConfig
from irohpy.relay.server.handshake import handshake
from irohpy.relay.server.metrics import RelayMetrics
from irohpy.relay.stun import STUN_PORT_HEADER

BANNER = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>iroh relay</title></head>
<body><h1>iroh relay</h1>
<p>This is an <a href="https://github.com/n0-computer/iroh">iroh</a> relay server (irohpy).
It forwards encrypted QUIC packets between iroh endpoints that cannot reach each other directly.</p>
</body></html>
"""
ROBOTS = "User-agent: *\nDisallow: /\n"
CHALLENGE_HEADER = "X-Iroh-Challenge"
RESPONSE_HEADER = "X-Iroh-Response"
_CHALLENGE = re.compile(r"[A-Za-z0-9._-]{1,63}")
# Sent on every TLS response, as iroh-relay does: pin HTTPS and forbid any active content.
_TLS_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
}


def _bad_upgrade(text: str, **headers: str) -> web.Response:
    return web.Response(status=400, text=text + "\n", headers=headers)


def negotiate(request: web.BaseRequest) -> str | web.Response:
    """The subprotocol for this upgrade request, or the 400 response that refuses it."""
    if request.headers.get("Upgrade", "").strip().lower() != "websocket":
        return _bad_upgrade("this endpoint only accepts a WebSocket upgrade")
    if request.headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return _bad_upgrade("unsupported WebSocket version; this relay speaks 13", **{"Sec-WebSocket-Version": "13"})
    subprotocol = negotiate_subprotocol(request.headers.get("Sec-WebSocket-Protocol", ""))
    if subprotocol is None:
        return _bad_upgrade(f"Sec-WebSocket-Protocol must offer {SUBPROTOCOL_V2} or {SUBPROTOCOL_V1}")
    return subprotocol


def request_token(request: web.BaseRequest) -> str | None:
    """An access token from ``Authorization: Bearer`` (preferred) or the ``token`` query parameter."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


async def generate_204(request: web.Request) -> web.Response:
    """Captive-portal check: echo a well-formed challenge so the client knows nothing rewrote us."""
    response = web.Response(status=204)
    challenge = request.headers.get(CHALLENGE_HEADER, "")
    if _CHALLENGE.fullmatch(challenge):
        response.headers[RESPONSE_HEADER] = f"response {challenge}"
    return response




async def index(request: web.Request) -> web.Response:
    return web.Response(text=BANNER, content_type="text/html")


async def robots(request: web.Request) -> web.Response:
    return web.Response(text=ROBOTS)


async def healthz(request: web.Request) -> web.Response:
    body = {"status": "ok", "version": __version__, "git_hash": "unknown"}
    return web.Response(text=json.dumps(body), content_type="application/json")


class RelayService:
    """Handlers for the main port; ``policy`` may be swapped at run time (config reload)."""

    def __init__(self, config: ServerConfig, clients: Clients, metrics: RelayMetrics) -> None:
        self.config = config
        self.policy: AccessPolicy = config.access
        self._clients = clients
        self._metrics = metrics
        self.stun_port: int | None = None

    async def ping(self, request: web.Request) -> web.Response:
        """Latency probe: clients time it, browsers may call it cross-origin.

        It also says where we answer STUN, so endpoints find their public address without
        configuration; other clients ignore the header.
        """
        headers = {"Access-Control-Allow-Origin": "*"}
        if self.stun_port is not None:
            headers[STUN_PORT_HEADER] = str(self.stun_port)
        return web.Response(status=200, headers=headers)

    async def relay(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        limits = self.config.limits
        deadline = loop.time() + limits.accept_timeout
        subprotocol = negotiate(request)
        if isinstance(subprotocol, web.Response):
            return subprotocol
        ws = web.WebSocketResponse(protocols=(subprotocol,), max_msg_size=MAX_MESSAGE_SIZE, compress=False,
                                   timeout=limits.write_timeout, autoping=False)
        await ws.prepare(request)
        version = version_of(subprotocol)
        token = request_token(request)
        endpoint_id = await handshake(ws, version, policy=self.policy, token=token, metrics=self._metrics,
                                      deadline=deadline, close_timeout=limits.write_timeout)
        if endpoint_id is None:
            return ws
        client = Client(ws, endpoint_id, version, forwarder=self._clients, limits=limits,
                        timers=self.config.timers, metrics=self._metrics, token=token)
        self._clients.register(client)
        try:
            await client.run()
        finally:
            self._clients.unregister(client, client.why)
        return ws



async def _tls_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.secure:
        response.headers.update(_TLS_HEADERS)


def relay_app(service: RelayService) -> web.Application:
    app = web.Application()
    app.router.add_get("/relay", service.relay)
    app.router.add_get("/ping", service.ping)
    app.router.add_get("/generate_204", generate_204)
    app.router.add_get("/", index)
    app.router.add_get("/index.html", index)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/healthz", healthz)
    app.on_response_prepare.append(_tls_headers)
    return app


def portal_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/generate_204", generate_204)
    return app


def metrics_app(metrics: RelayMetrics) -> web.Application:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app
