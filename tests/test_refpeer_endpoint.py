"""Interop with Rust iroh 1.x through the official `iroh` package, both directions."""

from __future__ import annotations

import asyncio
import os

import pytest

from irohpy import EndpointAddr, EndpointId, SecretKey
from irohpy.base.addr import TransportAddr
from irohpy.endpoint import HandshakeLimits
from irohpy.errors import ApplicationClosed, ConnectError
from irohpy.protocols import ping as ping_proto
from irohpy.protocols.router import Router
from tests.helpers import BOTH, bind
from tests.refpeer import bind_ref, patch_fast_writes, ref_v4_port

pytestmark = pytest.mark.refpeer

ALPN = b"irohpy/interop/0"
T = 10


def ref_addr_of(iroh, ep) -> EndpointAddr:  # type: ignore[no-untyped-def]
    """Our EndpointAddr for a reference endpoint (v4 loopback only)."""
    return EndpointAddr(EndpointId.from_bytes(ep.id().to_bytes()),
                        frozenset({TransportAddr.Ip("127.0.0.1", ref_v4_port(ep))}))


def their_addr_of(iroh, ours) -> object:  # type: ignore[no-untyped-def]
    """The reference package's EndpointAddr for one of our endpoints."""
    direct = [str(ip) for ip in ours.addr().ip_addrs()]
    return iroh.EndpointAddr(iroh.EndpointId.from_bytes(bytes(ours.id)), None, direct)


async def ref_echo_once(ref) -> bytes:  # type: ignore[no-untyped-def]
    """Accept one connection on the reference endpoint; echo a bi stream, a uni stream and a datagram."""
    inc = await ref.accept_next()
    conn = await (await inc.accept()).connect()
    remote = conn.remote_id().to_bytes()
    bi = await conn.accept_bi()
    data = await bi.recv().read_to_end(1 << 20)
    await bi.send().write_all(data)
    await bi.send().finish()
    uni = await conn.accept_uni()
    udata = await uni.read_to_end(1 << 20)
    back = await conn.open_uni()
    await back.write_all(udata)
    await back.finish()
    dgram = await conn.read_datagram()
    conn.send_datagram(dgram)
    await conn.closed()
    return remote


async def our_accept_fails(ours) -> str:  # type: ignore[no-untyped-def]
    """Accept one attempt on our endpoint that must fail; return our error text."""
    incoming = await ours.accept()
    assert incoming is not None
    with pytest.raises(ConnectError) as info:
        await incoming.accept(timeout=T)
    return str(info.value)


async def test_ours_dials_theirs_echo_bi_uni_datagram(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    ref = await bind_ref(iroh, alpns=[ALPN])
    ours = await bind()
    try:
        server = asyncio.create_task(ref_echo_once(ref))
        async with asyncio.timeout(T):
            conn = await ours.connect(ref_addr_of(iroh, ref), ALPN)
            assert conn.remote_id == EndpointId.from_bytes(ref.id().to_bytes())
            send, recv = await conn.open_bi()
            payload = os.urandom(200_000)
            await send.write_all(payload)
            await send.finish()
            assert await recv.read_to_end(1 << 20) == payload
            uni = await conn.open_uni()
            await uni.write_all(b"uni hello")
            await uni.finish()
            assert await (await conn.accept_uni()).read_to_end(100) == b"uni hello"
            conn.send_datagram(b"datagram!")
            assert await conn.read_datagram() == b"datagram!"
            conn.close(0, b"bye")
            assert await server == bytes(ours.id)
    finally:
        await ours.close()
        await ref.close()


async def test_theirs_dials_ours_echo_bi_uni_datagram(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    patch_fast_writes(iroh)
    ours = await bind([ALPN], addrs=BOTH)
    ref = await bind_ref(iroh)
    try:
        async def serve() -> EndpointId:
            incoming = await ours.accept()
            assert incoming is not None
            conn = await incoming.accept()
            send, recv = await conn.accept_bi()
            await send.write_all(await recv.read_to_end(1 << 20))
            await send.finish()
            urecv = await conn.accept_uni()
            usend = await conn.open_uni()
            await usend.write_all(await urecv.read_to_end(1 << 20))
            await usend.finish()
            conn.send_datagram(await conn.read_datagram())
            reason = await conn.closed()
            assert isinstance(reason, ApplicationClosed) and reason.reason == b"bye"
            assert conn.remote_id is not None
            return conn.remote_id

        server = asyncio.create_task(serve())
        async with asyncio.timeout(T):
            # Both our v4 and v6 addresses: the Rust dialer sends its Initial to
            # each; we must answer on one path only.
            conn = await ref.connect(their_addr_of(iroh, ours), ALPN)
            assert conn.remote_id().to_bytes() == bytes(ours.id)
            bi = await conn.open_bi()
            payload = os.urandom(100_000)
            await bi.send().write_all(payload)
            await bi.send().finish()
            assert await bi.recv().read_to_end(1 << 20) == payload
            uni = await conn.open_uni()
            await uni.write_all(b"uni from rust")
            await uni.finish()
            assert await (await conn.accept_uni()).read_to_end(100) == b"uni from rust"
            conn.send_datagram(b"rust datagram")
            assert await conn.read_datagram() == b"rust datagram"
            assert len(conn.paths()) == 1
            conn.close(0, b"bye")
            assert await server == EndpointId.from_bytes(ref.id().to_bytes())
    finally:
        await ours.close()
        await ref.close()


async def test_ping_against_their_protocol_handler(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop

    class RefPing(iroh.ProtocolHandler):
        async def accept(self, conn):  # type: ignore[no-untyped-def]
            try:
                bi = await conn.accept_bi()
                req = await bi.recv().read_to_end(4)
                assert req == b"PING"
                await bi.send().write_all(b"PONG")
                await bi.send().finish()
                await conn.closed()
            except iroh.IrohError:
                pass

        async def shutdown(self):  # type: ignore[no-untyped-def]
            return None

    class Creator(iroh.ProtocolCreator):
        def create(self, endpoint):  # type: ignore[no-untyped-def]
            return RefPing()

    ref = await bind_ref(iroh, alpns=[ping_proto.ALPN], protocols={ping_proto.ALPN: Creator()})
    ours = await bind()
    try:
        async with asyncio.timeout(T):
            rtt = await ping_proto.Ping().ping(ours, ref_addr_of(iroh, ref))
        assert 0 < rtt < 1
    finally:
        await ours.close()
        await ref.close()


async def test_their_ping_against_our_router(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    ours = await bind()
    ping = ping_proto.Ping()
    router = Router.builder(ours).accept(ping_proto.ALPN, ping).spawn()
    ref = await bind_ref(iroh)
    try:
        async with asyncio.timeout(T):
            conn = await ref.connect(their_addr_of(iroh, ours), ping_proto.ALPN)
            bi = await conn.open_bi()
            await bi.send().write_all(b"PING")
            await bi.send().finish()
            assert await bi.recv().read_to_end(4) == b"PONG"
            conn.close(0, b"bye!")
            while ping.pings_answered < 1:
                await asyncio.sleep(0.01)
    finally:
        await router.shutdown()
        await ref.close()


async def test_wrong_key_fails_both_directions(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    ref = await bind_ref(iroh, alpns=[ALPN])
    ours = await bind([ALPN])
    try:
        wrong = ref_addr_of(iroh, ref)
        wrong = EndpointAddr(SecretKey.generate().public(), wrong.addrs)

        async def ref_accept_fails() -> None:
            inc = await ref.accept_next()
            with pytest.raises(iroh.IrohError):
                await (await inc.accept()).connect()

        ref_side = asyncio.create_task(ref_accept_fails())
        with pytest.raises(ConnectError, match="0x12a|certificate"):
            await ours.connect(wrong, ALPN, timeout=T)
        await asyncio.wait_for(ref_side, T)

        our_side = asyncio.create_task(our_accept_fails(ours))
        other = iroh.SecretKey.generate().public()
        target = iroh.EndpointAddr(other, None, [str(ip) for ip in ours.addr().ip_addrs()])
        with pytest.raises(iroh.IrohError) as info:
            await asyncio.wait_for(ref.connect(target, ALPN), T)
        assert "UnknownIssuer" in info.value.message()
        assert "0x130" in await asyncio.wait_for(our_side, T)
    finally:
        await ours.close()
        await ref.close()


async def test_wrong_alpn_fails_both_directions(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    ref = await bind_ref(iroh, alpns=[ALPN])
    ours = await bind([ALPN])
    try:
        async def ref_accept_fails() -> None:
            inc = await ref.accept_next()
            with pytest.raises(iroh.IrohError):
                await (await inc.accept()).connect()

        ref_side = asyncio.create_task(ref_accept_fails())
        with pytest.raises(ConnectError, match="0x178"):
            await ours.connect(ref_addr_of(iroh, ref), b"nobody/speaks/this", timeout=T)
        await asyncio.wait_for(ref_side, T)

        our_side = asyncio.create_task(our_accept_fails(ours))
        with pytest.raises(iroh.IrohError) as info:
            await asyncio.wait_for(ref.connect(their_addr_of(iroh, ours), b"nobody/speaks/this"), T)
        assert "error 120" in info.value.message()
        assert "0x178" in await asyncio.wait_for(our_side, T)
    finally:
        await ours.close()
        await ref.close()


async def test_refuse_seen_by_rust_dialer(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    ours = await bind([ALPN])
    ref = await bind_ref(iroh)
    try:
        async def refuse() -> None:
            incoming = await ours.accept()
            assert incoming is not None
            incoming.refuse()

        task = asyncio.create_task(refuse())
        with pytest.raises(iroh.IrohError) as info:
            await asyncio.wait_for(ref.connect(their_addr_of(iroh, ours), ALPN), T)
        assert "refused" in info.value.message()
        await task
    finally:
        await ours.close()
        await ref.close()


async def test_rust_dialer_completes_after_a_forced_retry(iroh_loop) -> None:  # type: ignore[no-untyped-def]
    iroh = iroh_loop
    ours = await bind([ALPN], handshake_limits=HandshakeLimits(always_retry=True))
    ref = await bind_ref(iroh)
    try:
        async def serve() -> bool:
            incoming = await ours.accept()
            assert incoming is not None
            validated = incoming.remote_addr_validated()
            conn = await incoming.accept()
            send, recv = await conn.accept_bi()
            await send.write_all(await recv.read_to_end(1 << 20))
            await send.finish()
            await conn.closed()
            return validated

        server = asyncio.create_task(serve())
        async with asyncio.timeout(T):
            conn = await ref.connect(their_addr_of(iroh, ours), ALPN)
            assert conn.remote_id().to_bytes() == bytes(ours.id)
            bi = await conn.open_bi()
            await bi.send().write_all(b"after a retry")
            await bi.send().finish()
            assert await bi.recv().read_to_end(100) == b"after a retry"
            conn.close(0, b"bye")
            assert await server
        assert ours._engine.core.stats.retries >= 1
    finally:
        await ours.close()
        await ref.close()
