"""irohpy.tls against Rust iroh 1.4 (the official ``iroh`` package), over UDP on loopback.

Only the TLS layer is under test: our side is a bare IrohQuicConnection on a test pump.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest
from aioquic import tls
from aioquic.quic.connection import QuicConnection

from irohpy.tls import IrohQuicConnection, IrohSessionTicket, quic_configuration
from irohpy.tls.keys import private_key, public_key_bytes
from tests.quic_pump import ConnectionClosed, PumpedConnection, QuicPump
from tests.refpeer import bind_ref, ref_v4_port

pytestmark = pytest.mark.refpeer

ALPN = b"irohpy/tls-interop/0"
T = 10.0
OUR_SECRET = bytes([7]) * 32
OUR_ID = public_key_bytes(private_key(OUR_SECRET))
OTHER_ID = public_key_bytes(private_key(bytes([8]) * 32))

BAD_CERTIFICATE = 0x100 + tls.AlertDescription.bad_certificate
UNKNOWN_CA = 0x100 + tls.AlertDescription.unknown_ca
NO_APPLICATION_PROTOCOL = 0x100 + tls.AlertDescription.no_application_protocol

R = TypeVar("R")


async def within(awaitable: Awaitable[R], seconds: float = T) -> R:
    async with asyncio.timeout(seconds):
        return await awaitable


@contextlib.asynccontextmanager
async def pump() -> AsyncIterator[QuicPump]:
    p = await QuicPump.bind()
    try:
        yield p
    finally:
        p.close()


@contextlib.asynccontextmanager
async def reference(iroh: Any, alpns: list[bytes]) -> AsyncIterator[Any]:
    ep = await bind_ref(iroh, alpns=alpns)
    try:
        yield ep
    finally:
        await within(ep.close())


@contextlib.asynccontextmanager
async def background(coro: Awaitable[R]) -> AsyncIterator[asyncio.Task[R]]:
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await within(task)


def dial(
    p: QuicPump, ref: Any, *, expected: bytes | None = None, alpn: bytes = ALPN, **kwargs: Any
) -> PumpedConnection:
    peer = expected if expected is not None else ref.id().to_bytes()
    ticket = kwargs.pop("session_ticket", None)
    config = quic_configuration(
        OUR_SECRET, is_client=True, alpns=[alpn], expected_peer=peer, session_ticket=ticket
    )
    quic = IrohQuicConnection(configuration=config, expected_peer=peer, **kwargs)
    return p.dial(quic, ("127.0.0.1", ref_v4_port(ref)))


def serve(p: QuicPump, **kwargs: Any) -> None:
    def make(odcid: bytes) -> QuicConnection:
        config = quic_configuration(OUR_SECRET, is_client=False, alpns=[ALPN])
        return IrohQuicConnection(configuration=config, original_destination_connection_id=odcid, **kwargs)

    p.listen(make)


def their_addr_for_us(iroh: Any, p: QuicPump, peer: bytes = OUR_ID) -> Any:
    host, port = p.addr
    return iroh.EndpointAddr(iroh.EndpointId.from_bytes(peer), None, [f"{host}:{port}"])


async def ref_echo(ref: Any, connections: int = 1) -> list[bytes]:
    """Accept connections on the reference endpoint and echo one bidi stream on each."""
    remotes = []
    for _ in range(connections):
        inc = await ref.accept_next()
        conn = await (await inc.accept()).connect()
        remotes.append(conn.remote_id().to_bytes())
        bi = await conn.accept_bi()
        data = await bi.recv().read_to_end(1 << 16)
        await bi.send().write_all(data)
        await bi.send().finish()
        await conn.closed()
    return remotes


def ref_error(exc: BaseException) -> str:
    """The text of an error from the bindings (their exceptions have an empty ``str``)."""
    message = getattr(exc, "message", None)
    return message() if callable(message) else str(exc)


async def ref_accept_fails(ref: Any) -> str:
    """Accept one connection attempt that must fail; return the reference peer's error."""
    inc = await ref.accept_next()
    try:
        await (await inc.accept()).connect()
    except Exception as exc:  # the bindings raise iroh.IrohError
        return ref_error(exc)
    raise AssertionError("the reference peer accepted the connection")


async def echo_through(conn: PumpedConnection, payload: bytes) -> bytes:
    stream_id = conn.quic.get_next_available_stream_id()
    conn.send(stream_id, payload, end_stream=True)
    return await within(conn.read_stream(stream_id))


async def test_ours_dials_theirs(iroh_loop: Any) -> None:
    iroh = iroh_loop
    async with reference(iroh, [ALPN]) as ref, pump() as p, background(ref_echo(ref)) as server:
        conn = dial(p, ref)
        done = await within(conn.wait_handshake())
        assert done.alpn_protocol == ALPN.decode()
        assert isinstance(conn.quic, IrohQuicConnection)
        assert conn.quic.peer_id == ref.id().to_bytes()
        assert await echo_through(conn, b"hello from python") == b"hello from python"
        conn.close(0, "bye")
        assert await within(server) == [OUR_ID]


async def test_ours_resumes_with_their_ticket(iroh_loop: Any) -> None:
    iroh = iroh_loop
    tickets: list[tls.SessionTicket] = []
    async with reference(iroh, [ALPN]) as ref, pump() as p, background(ref_echo(ref, 2)) as server:
        first = dial(p, ref, session_ticket_handler=tickets.append)
        await within(first.wait_handshake())
        assert await echo_through(first, b"one") == b"one"
        assert tickets, "Rust iroh issued no session ticket"
        ticket = tickets[-1]
        assert isinstance(ticket, IrohSessionTicket) and ticket.peer_id == ref.id().to_bytes()
        first.close(0, "first done")
        second = dial(p, ref, session_ticket=ticket)
        done = await within(second.wait_handshake())
        assert done.session_resumed
        assert isinstance(second.quic, IrohQuicConnection) and second.quic.peer_id == ref.id().to_bytes()
        assert await echo_through(second, b"two") == b"two"
        second.close(0, "bye")
        assert await within(server) == [OUR_ID, OUR_ID]


async def ours_echo(p: QuicPump) -> PumpedConnection:
    conn = await p.incoming.get()
    await conn.wait_handshake()
    stream_id = await conn.accept_stream()
    conn.send(stream_id, await conn.read_stream(stream_id), end_stream=True)
    return conn


async def ref_dial_echo(iroh: Any, ref: Any, p: QuicPump, payload: bytes) -> tuple[bytes, bytes]:
    conn = await ref.connect(their_addr_for_us(iroh, p), ALPN)
    bi = await conn.open_bi()
    await bi.send().write_all(payload)
    await bi.send().finish()
    reply = await bi.recv().read_to_end(1 << 16)
    remote = conn.remote_id().to_bytes()
    conn.close(0, b"bye")
    return reply, remote


async def test_theirs_dials_ours(iroh_loop: Any) -> None:
    iroh = iroh_loop
    server_tickets: dict[bytes, tls.SessionTicket] = {}

    def keep(ticket: tls.SessionTicket) -> None:
        server_tickets[ticket.ticket] = ticket

    async with reference(iroh, []) as ref, pump() as p:
        serve(p, session_ticket_handler=keep, session_ticket_fetcher=lambda label: server_tickets.pop(label, None))
        for attempt in range(2):  # the second dial resumes with the ticket our server issued
            async with background(ours_echo(p)) as accepted:
                reply, remote = await within(ref_dial_echo(iroh, ref, p, b"hi from rust %d" % attempt))
                assert reply == b"hi from rust %d" % attempt
                assert remote == OUR_ID
                conn = await within(accepted)
                assert conn.handshake is not None
                assert isinstance(conn.quic, IrohQuicConnection)
                assert conn.quic.peer_id == ref.id().to_bytes()
                assert conn.handshake.session_resumed == (attempt == 1)
                closed = await within(conn.wait_closed())
                assert closed.error_code == 0 and closed.reason_phrase == "bye"


async def test_wrong_expected_id_fails_on_our_client(iroh_loop: Any) -> None:
    iroh = iroh_loop
    async with reference(iroh, [ALPN]) as ref, pump() as p, background(ref_accept_fails(ref)) as server:
        conn = dial(p, ref, expected=OTHER_ID)
        with pytest.raises(ConnectionClosed) as failure:
            await within(conn.wait_handshake())
        assert failure.value.error_code == BAD_CERTIFICATE
        assert "does not match expected id" in failure.value.reason
        assert isinstance(conn.quic, IrohQuicConnection) and conn.quic.peer_id is None
        assert "error 42: peer key does not match expected id" in await within(server)


async def test_they_expect_a_different_id(iroh_loop: Any) -> None:
    iroh = iroh_loop
    async with reference(iroh, []) as ref, pump() as p:
        serve(p)
        with pytest.raises(iroh.IrohError) as failure:
            await within(ref.connect(their_addr_for_us(iroh, p, OTHER_ID), ALPN))
        assert "error 48: invalid peer certificate: UnknownIssuer" in ref_error(failure.value)
        rejected = await within(p.incoming.get())
        closed = await within(rejected.wait_closed())
        assert closed.error_code == UNKNOWN_CA
        assert rejected.handshake is None
        # Our side is unharmed: the right id still connects on the same socket.
        async with background(ours_echo(p)) as accepted:
            reply, remote = await within(ref_dial_echo(iroh, ref, p, b"after"))
            assert (reply, remote) == (b"after", OUR_ID)
            await within(accepted)


async def test_alpn_not_offered_by_their_server(iroh_loop: Any) -> None:
    iroh = iroh_loop
    async with reference(iroh, [ALPN]) as ref, pump() as p, background(ref_accept_fails(ref)) as server:
        conn = dial(p, ref, alpn=b"irohpy/not-offered/0")
        with pytest.raises(ConnectionClosed) as failure:
            await within(conn.wait_handshake())
        assert failure.value.error_code == NO_APPLICATION_PROTOCOL
        assert "NoApplicationProtocol" in await within(server)
