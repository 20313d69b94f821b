"""The relay handshake on an upgraded WebSocket: challenge, ClientAuth, then access control.

The server always sends the challenge (it cannot check ``x-iroh-relay-client-auth-v1``
without a TLS exporter, iroh-wire.md §4.4). Refusals after a valid ClientAuth are sent as
``ServerDeniesAuth(reason)``; every refusal ends with a WebSocket close carrying the reason
and is counted by kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from irohpy.base.keys import PublicKey
from irohpy.errors import RelayProtocolError
from irohpy.relay.protocol import (
    ClientAuth, ServerConfirmsAuth, ServerDeniesAuth, decode, encode, new_challenge, verify_client_auth,
)
from irohpy.relay.server.access import AccessPolicy
from irohpy.relay.server.client import close_reason
from irohpy.relay.server.metrics import RelayMetrics

logger = logging.getLogger(__name__)


async def _first_binary(ws: web.WebSocketResponse) -> bytes | None:
    """The first binary message; text and WebSocket pings or pongs before it are skipped
    (the handshake deadline bounds them)."""
    while True:
        msg = await ws.receive()
        if msg.type is WSMsgType.BINARY:
            return msg.data
        if msg.type not in (WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG):
            return None


class _Refused(Exception):
    def __init__(self, kind: str, code: int, reason: str, *, deny: bool) -> None:
        super().__init__(reason)
        self.kind, self.code, self.reason, self.deny = kind, code, reason, deny


async def _exchange(ws: web.WebSocketResponse, version: int, policy: AccessPolicy,
                    token: str | None) -> PublicKey | None:
    challenge = new_challenge()
    await ws.send_bytes(encode(challenge))
    data = await _first_binary(ws)
    if data is None:
        return None
    try:
        frame = decode(data, version=version)
    except RelayProtocolError as exc:
        raise _Refused("protocol", WSCloseCode.PROTOCOL_ERROR, f"handshake: {exc}", deny=False) from None
    if not isinstance(frame, ClientAuth):
        reason = f"expected ClientAuth, got {type(frame).__name__}"
        raise _Refused("protocol", WSCloseCode.PROTOCOL_ERROR, reason, deny=False)
    if not verify_client_auth(challenge, frame):
        raise _Refused("signature", WSCloseCode.POLICY_VIOLATION, "signature invalid", deny=True)
    decision = policy.check(frame.public_key, token, time.time())
    if not decision.allowed:
        logger.info("refused %s: %s", frame.public_key.fmt_short(), decision.reason)
        raise _Refused(decision.kind, WSCloseCode.POLICY_VIOLATION, decision.reason, deny=True)
    await ws.send_bytes(encode(ServerConfirmsAuth()))
    return frame.public_key


async def handshake(ws: web.WebSocketResponse, version: int, *, policy: AccessPolicy, token: str | None,
                    metrics: RelayMetrics, deadline: float, close_timeout: float) -> PublicKey | None:
    """The client's EndpointId once it proved it and is admitted; None if it was refused or left.

    ``deadline`` (loop time) bounds the whole exchange; a refusal is then told to the client
    within ``close_timeout``.
    """
    try:
        async with asyncio.timeout_at(deadline):
            return await _exchange(ws, version, policy, token)
    except TimeoutError:
        refused = _Refused("timeout", WSCloseCode.POLICY_VIOLATION, "handshake timed out", deny=False)
    except _Refused as exc:
        refused = exc
    except ConnectionError:
        return None
    metrics.auth_failures.labels(refused.kind).inc()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(close_timeout):
            if refused.deny:
                await ws.send_bytes(encode(ServerDeniesAuth(refused.reason)))
            await ws.close(code=refused.code, message=close_reason(refused.reason))
    return None
