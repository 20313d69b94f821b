"""``irohpy pipe``: dumbpipe's commands, wire-compatible with dumbpipe.

The ticket goes to stderr so stdout stays pure data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from irohpy.base.addr import EndpointAddr
from irohpy.base.ticket import EndpointTicket
from irohpy.cli.common import add_endpoint_args, endpoint_from_args, eprint, secret_from_args, ticket_for
from irohpy.cli.stdio import StdinReader, StdoutWriter
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.endpoint.streams import RecvStream, SendStream
from irohpy.errors import IrohError
from irohpy.protocols import pipe as proto


def parse_alpn(value: str) -> bytes:
    """dumbpipe's ``--custom-alpn``: ``utf8:TEXT`` or hex bytes."""
    if value.startswith("utf8:"):
        return value[5:].encode()
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"custom ALPN must be utf8:TEXT or hex, got {value!r}") from None


def _common(parser: argparse.ArgumentParser) -> None:
    add_endpoint_args(parser)
    parser.add_argument("--custom-alpn", type=parse_alpn, metavar="utf8:TEXT|HEX",
                        help="speak another ALPN, with no hello handshake")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("pipe", help="dumbpipe: pipes and port forwarding over iroh")
    cmds = parser.add_subparsers(dest="pipe_command", required=True, metavar="SUBCOMMAND")

    gen = cmds.add_parser("generate-ticket", help="print an id-only ticket for --key FILE or IROH_SECRET")
    gen.add_argument("--key", metavar="FILE", help="secret key file (default $IROH_SECRET)")
    gen.set_defaults(func=generate_ticket)

    listen_p = cmds.add_parser("listen", help="serve one connection on stdin/stdout")
    listen_p.add_argument("--recv-only", action="store_true", help="only receive; ignore stdin")
    _common(listen_p)
    listen_p.set_defaults(func=listen)

    connect_p = cmds.add_parser("connect", help="connect stdin/stdout to a listener")
    connect_p.add_argument("ticket", metavar="TICKET")
    connect_p.add_argument("--recv-only", action="store_true", help="only receive; ignore stdin")
    _common(connect_p)
    connect_p.set_defaults(func=connect)

    ltcp = cmds.add_parser("listen-tcp", help="forward each incoming stream to a TCP backend")
    ltcp.add_argument("--host", required=True, metavar="HOST:PORT", help="the TCP backend")
    _common(ltcp)
    ltcp.set_defaults(func=listen_tcp)

    ctcp = cmds.add_parser("connect-tcp", help="listen on local TCP; forward each connection to TICKET")
    ctcp.add_argument("--addr", required=True, metavar="ADDR:PORT", help="local TCP address to listen on")
    ctcp.add_argument("ticket", metavar="TICKET")
    _common(ctcp)
    ctcp.set_defaults(func=connect_tcp)

    lunix = cmds.add_parser("listen-unix", help="forward each incoming stream to a Unix socket")
    lunix.add_argument("--socket-path", required=True, metavar="PATH")
    _common(lunix)
    lunix.set_defaults(func=listen_unix)

    cunix = cmds.add_parser("connect-unix", help="listen on a Unix socket; one stream per local client")
    cunix.add_argument("--socket-path", required=True, metavar="PATH")
    cunix.add_argument("ticket", metavar="TICKET")
    _common(cunix)
    cunix.set_defaults(func=connect_unix)


def generate_ticket(args: argparse.Namespace) -> int:
    """An id-only ticket is only useful for a key that outlives this run, so one is required."""
    print(EndpointTicket(EndpointAddr.from_id(secret_from_args(args, required=True).public())))
    return 0


def _alpn(args: argparse.Namespace) -> bytes:
    return args.custom_alpn or proto.ALPN


def _handshake(args: argparse.Namespace) -> bool:
    return args.custom_alpn is None


def _announce(endpoint: Endpoint, command: str) -> None:
    eprint("Listening. To connect, use:")
    eprint(f"irohpy pipe {command} {ticket_for(endpoint)}")


def _split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


async def _stdio_session(send: SendStream, recv: RecvStream, recv_only: bool) -> None:
    if recv_only:
        await send.finish()
        await proto.copy_from_stream(recv, StdoutWriter())
    else:
        await proto.forward(StdinReader(), StdoutWriter(), send, recv)


async def listen(args: argparse.Namespace) -> int:
    async with await endpoint_from_args(args, [_alpn(args)]) as endpoint:
        _announce(endpoint, "connect")
        while (incoming := await endpoint.accept()) is not None:
            try:
                conn = await incoming.accept()
            except IrohError as exc:
                eprint(f"warning: incoming connection failed: {exc}")
                continue
            send, recv = await conn.accept_bi()
            if _handshake(args):
                await proto.recv_handshake(recv)
            await _stdio_session(send, recv, args.recv_only)
            conn.close(0, b"")
            break
    return 0


async def connect(args: argparse.Namespace) -> int:
    ticket = EndpointTicket.parse(args.ticket.strip())
    async with await endpoint_from_args(args, wait_online=False) as endpoint:
        conn = await endpoint.connect(ticket, _alpn(args))
        send, recv = await conn.open_bi()
        if _handshake(args):
            await proto.send_handshake(send)
        await _stdio_session(send, recv, args.recv_only)
        conn.close(0, b"")
    return 0


async def _serve_streams(args: argparse.Namespace, open_backend) -> int:  # type: ignore[no-untyped-def]
    """listen-tcp / listen-unix: many connections, each bidi stream gets its own backend."""
    tasks: set[asyncio.Task[None]] = set()

    async def per_stream(send, recv) -> None:  # type: ignore[no-untyped-def]
        try:
            if _handshake(args):
                await proto.recv_handshake(recv)
            reader, writer = await open_backend()
        except (IrohError, OSError) as exc:
            eprint(f"warning: backend connection failed: {exc}")
            send.reset(1)
            recv.stop(1)
            return
        try:
            await proto.forward(reader, writer, send, recv)
        finally:
            writer.close()

    async def per_conn(conn: Connection) -> None:
        with contextlib.suppress(IrohError):
            while True:
                send, recv = await conn.accept_bi()
                spawn(per_stream(send, recv))

    async def per_incoming(incoming) -> None:  # type: ignore[no-untyped-def]
        try:
            conn = await incoming.accept()
        except IrohError as exc:
            eprint(f"warning: incoming connection failed: {exc}")
            return
        await per_conn(conn)

    def spawn(coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with await endpoint_from_args(args, [_alpn(args)]) as endpoint:
        _announce(endpoint, "connect-tcp --addr 127.0.0.1:PORT" if args.pipe_command == "listen-tcp"
                  else "connect-unix --socket-path PATH")
        try:
            while (incoming := await endpoint.accept()) is not None:
                spawn(per_incoming(incoming))
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return 0


async def listen_tcp(args: argparse.Namespace) -> int:
    host, port = _split_hostport(args.host)
    return await _serve_streams(args, lambda: asyncio.open_connection(host, port))


async def listen_unix(args: argparse.Namespace) -> int:
    return await _serve_streams(args, lambda: asyncio.open_unix_connection(args.socket_path))


async def connect_tcp(args: argparse.Namespace) -> int:
    """A new iroh connection for every local TCP connection, as dumbpipe does."""
    ticket = EndpointTicket.parse(args.ticket.strip())
    host, port = _split_hostport(args.addr)
    async with await endpoint_from_args(args, wait_online=False) as endpoint:

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                conn = await endpoint.connect(ticket, _alpn(args))
                send, recv = await conn.open_bi()
                if _handshake(args):
                    await proto.send_handshake(send)
                await proto.forward(reader, writer, send, recv)
                conn.close(0, b"")
            except IrohError as exc:
                eprint(f"warning: forwarding failed: {exc}")
            finally:
                writer.close()

        server = await asyncio.start_server(on_client, host, port)
        async with server:
            bound = server.sockets[0].getsockname()
            eprint(f"forwarding tcp {bound[0]}:{bound[1]} to {ticket.addr.id.fmt_short()}")
            await server.serve_forever()
    return 0


async def connect_unix(args: argparse.Namespace) -> int:
    """One iroh connection, one stream per local client; removes the socket file on exit."""
    ticket = EndpointTicket.parse(args.ticket.strip())
    async with await endpoint_from_args(args, wait_online=False) as endpoint:
        conn = await endpoint.connect(ticket, _alpn(args))

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                send, recv = await conn.open_bi()
                if _handshake(args):
                    await proto.send_handshake(send)
                await proto.forward(reader, writer, send, recv)
            except IrohError as exc:
                eprint(f"warning: forwarding failed: {exc}")
            finally:
                writer.close()

        server = await asyncio.start_unix_server(on_client, args.socket_path)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.socket_path)
    return 0
