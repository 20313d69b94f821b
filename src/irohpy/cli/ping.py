"""``irohpy ping``: the iroh quickstart, as a command."""

from __future__ import annotations

import argparse
import asyncio

from irohpy.base.ticket import EndpointTicket
from irohpy.cli.common import add_endpoint_args, endpoint_from_args, eprint, positive_int, ticket_for
from irohpy.cli.metrics_addr import add_metrics_arg, metrics_served
from irohpy.protocols import ping as ping_proto
from irohpy.protocols.router import Router


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("ping", help="measure the round trip to another endpoint (iroh/ping/0)")
    roles = parser.add_subparsers(dest="ping_role", required=True, metavar="ROLE")
    recv = roles.add_parser("receiver", help="print a ticket and answer pings until Ctrl-C")
    add_endpoint_args(recv)
    add_metrics_arg(recv)
    recv.set_defaults(func=receiver)
    send = roles.add_parser("sender", help="ping the endpoint in TICKET")
    send.add_argument("ticket", metavar="TICKET")
    send.add_argument("-c", "--count", type=positive_int, default=1, help="number of pings (default 1)")
    add_endpoint_args(send)
    send.set_defaults(func=sender)


async def receiver(args: argparse.Namespace) -> int:
    endpoint = await endpoint_from_args(args, [ping_proto.ALPN])
    ping = ping_proto.Ping()
    async with Router.builder(endpoint).accept(ping_proto.ALPN, ping).spawn(), metrics_served(args, endpoint.metrics()):
        print(ticket_for(endpoint), flush=True)
        eprint("waiting for pings; Ctrl-C to stop")
        await asyncio.Event().wait()
    return 0


async def sender(args: argparse.Namespace) -> int:
    ticket = EndpointTicket.parse(args.ticket.strip())
    async with await endpoint_from_args(args, wait_online=False) as endpoint:
        ping = ping_proto.Ping()
        for _ in range(args.count):
            rtt = await ping.ping(endpoint, ticket)
            print(f"ping to {ticket.addr.id.fmt_short()}: rtt {rtt * 1000:.3f} ms", flush=True)
    return 0
