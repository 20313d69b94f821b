"""Endpoint hooks: order, first rejection wins, observe-only, both directions."""

from __future__ import annotations

import asyncio

import pytest

from irohpy.endpoint import Accept, ConnectionInfo, EndpointHooks, Reject
from irohpy.endpoint.connection import Side
from irohpy.errors import ApplicationClosed, LocallyRejected
from tests.helpers import accept_one, bind, endpoints

ALPN = b"test/hooks/0"


class Recorder(EndpointHooks):
    def __init__(self, name: str, log: list[str], reject_ids=(), reject_dial: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.name = name
        self.log = log
        self.reject_ids = set(reject_ids)
        self.reject_dial = reject_dial
        self.infos: list[ConnectionInfo] = []

    async def before_connect(self, remote_addr, alpn):  # type: ignore[no-untyped-def]
        self.log.append(f"{self.name}:before:{remote_addr.id.fmt_short()}")
        return Reject() if self.reject_dial else Accept()

    async def after_handshake(self, info):  # type: ignore[no-untyped-def]
        self.infos.append(info)
        self.log.append(f"{self.name}:after:{info.side.value}")
        if info.remote_id in self.reject_ids:
            return Reject(77, b"denied")
        return Accept()


async def test_hooks_reject_by_id_on_accepting_side() -> None:
    async with endpoints(2) as (friend, stranger):
        log: list[str] = []
        server = await bind([ALPN], hooks=[Recorder("h", log, reject_ids={stranger.id})])
        try:
            accepted = asyncio.create_task(accept_one(server))
            conn = await friend.connect(server.addr(), ALPN)
            peer = await accepted
            assert peer.remote_id == friend.id

            rejected = asyncio.create_task(accept_one(server))
            sconn = await stranger.connect(server.addr(), ALPN)
            reason = await asyncio.wait_for(sconn.closed(), 5)
            assert isinstance(reason, ApplicationClosed)
            assert (reason.error_code, reason.reason) == (77, b"denied")
            with pytest.raises(LocallyRejected):
                await rejected
            conn.close()
        finally:
            await server.close()


async def test_hooks_run_in_order_and_first_rejection_short_circuits() -> None:
    log: list[str] = []
    async with endpoints(1, [ALPN]) as (server,):
        first = Recorder("first", log)
        second = Recorder("second", log, reject_dial=True)
        third = Recorder("third", log)
        client = await bind(hooks=[first, second, third])
        try:
            with pytest.raises(LocallyRejected):
                await client.connect(server.addr(), ALPN)
            short = server.id.fmt_short()
            assert log == [f"first:before:{short}", f"second:before:{short}"]
        finally:
            await client.close()


async def test_after_handshake_rejection_on_dialing_side() -> None:
    log: list[str] = []
    async with endpoints(1, [ALPN]) as (server,):
        hook = Recorder("h", log, reject_ids={server.id})
        client = await bind(hooks=[hook])
        try:
            accepted = asyncio.create_task(accept_one(server))
            with pytest.raises(LocallyRejected):
                await client.connect(server.addr(), ALPN)
            peer = await accepted
            reason = await asyncio.wait_for(peer.closed(), 5)
            assert reason.error_code == 77
            assert log[-1] == "h:after:client"
        finally:
            await client.close()


async def test_hooks_observe_but_cannot_use_connections() -> None:
    log: list[str] = []
    async with endpoints(1, [ALPN]) as (server,):
        hook = Recorder("h", log)
        client = await bind(hooks=[hook])
        try:
            accepted = asyncio.create_task(accept_one(server))
            conn = await client.connect(server.addr(), ALPN)
            await accepted
            info = hook.infos[0]
            assert info.remote_id == server.id and info.alpn == ALPN and info.side is Side.CLIENT
            assert info.rtt > 0
            for forbidden in ("open_bi", "open_uni", "accept_bi", "close", "send_datagram"):
                assert not hasattr(info, forbidden)
            conn.close()
        finally:
            await client.close()


async def test_raising_hook_rejects() -> None:
    class Broken(EndpointHooks):
        async def after_handshake(self, info):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug in policy")

    async with endpoints(1) as (client,):
        server = await bind([ALPN], hooks=[Broken()])
        try:
            accepted = asyncio.create_task(accept_one(server))
            conn = await client.connect(server.addr(), ALPN)
            await asyncio.wait_for(conn.closed(), 5)
            with pytest.raises(LocallyRejected):
                await accepted
        finally:
            await server.close()
