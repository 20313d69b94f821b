"""The Router: one accept loop, many protocols, chosen by ALPN.

As in iroh, the router makes the endpoint advertise exactly the registered
ALPNs, hands each connection to its protocol's handler in a task of its own,
and shuts down in a fixed order: stop accepting, let every handler shut down,
cancel handlers still running, then close the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint, Incoming
from irohpy.errors import EndpointClosed, IrohError

log = logging.getLogger(__name__)

ACCEPT_TIMEOUT = 30.0


@runtime_checkable
class ProtocolHandler(Protocol):
    """Serves one ALPN. ``shutdown`` is optional."""

    async def accept(self, conn: Connection) -> None: ...


def _alpn(alpn: bytes | str) -> bytes:
    return alpn.encode() if isinstance(alpn, str) else bytes(alpn)


class RouterBuilder:
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._handlers: dict[bytes, ProtocolHandler] = {}

    def accept(self, alpn: bytes | str, handler: ProtocolHandler) -> RouterBuilder:
        """Serve ``alpn`` with ``handler``; register several ALPNs to offer several versions."""
        if not hasattr(handler, "accept"):
            raise TypeError("a protocol handler needs an `async accept(conn)` method")
        key = _alpn(alpn)
        if not key:
            raise ValueError("ALPN must not be empty")
        self._handlers[key] = handler
        return self

    def spawn(self) -> Router:
        if self._endpoint.is_closed:
            raise EndpointClosed("cannot spawn a router on a closed endpoint")
        return Router(self._endpoint, dict(self._handlers))


class Router:
    """Accepts connections and runs the matching protocol handler for each."""

    def __init__(self, endpoint: Endpoint, handlers: Mapping[bytes, ProtocolHandler]) -> None:
        self._endpoint = endpoint
        self._handlers = dict(handlers)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shutdown: asyncio.Task[None] | None = None
        endpoint.set_alpns(list(self._handlers))
        self._accept_loop = asyncio.ensure_future(self._run())

    @staticmethod
    def builder(endpoint: Endpoint) -> RouterBuilder:
        return RouterBuilder(endpoint)

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def is_shutdown(self) -> bool:
        return self._shutdown is not None

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.shutdown()

    async def _run(self) -> None:
        while (incoming := await self._endpoint.accept()) is not None:
            task = asyncio.ensure_future(self._handle(incoming))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, incoming: Incoming) -> None:
        try:
            conn = await incoming.accept(timeout=ACCEPT_TIMEOUT)
        except IrohError as exc:
            log.debug("incoming connection failed: %s", exc)
            return
        handler = self._handlers.get(conn.alpn or b"")
        if handler is None:
            log.debug("no handler for ALPN %r; closing", conn.alpn)
            conn.close(0, b"")
            return
        try:
            await handler.accept(conn)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("protocol handler for %r failed", conn.alpn)

    async def shutdown(self) -> None:
        """Graceful: stop accepting, shut handlers down, cancel stragglers, close the endpoint."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._do_shutdown())
        await asyncio.shield(self._shutdown)

    async def _do_shutdown(self) -> None:
        self._accept_loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accept_loop
        shutdowns = [h.shutdown() for h in set(self._handlers.values()) if hasattr(h, "shutdown")]
        for result in await asyncio.gather(*shutdowns, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("protocol handler shutdown failed: %s", result)
        for task in list(self._tasks):
            task.cancel()
        await self._endpoint.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
