"""``irohpy ticket inspect``: a ticket explorer."""

from __future__ import annotations

import argparse
import json
from typing import Any

from irohpy.base.ticket import EndpointTicket, Ticket


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("ticket", help="work with tickets")
    tickets = parser.add_subparsers(dest="ticket_command", required=True, metavar="SUBCOMMAND")
    inspect = tickets.add_parser("inspect", help="show what a ticket holds")
    inspect.add_argument("ticket", metavar="TICKET")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=inspect_ticket)


def describe(ticket: Ticket) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": ticket.KIND}
    if isinstance(ticket, EndpointTicket):
        addr = ticket.addr
        info["endpoint_id"] = str(addr.id)
        info["relay_urls"] = [str(u) for u in addr.relay_urls()]
        info["ip_addrs"] = [str(a) for a in addr.ip_addrs()]
    return info


def inspect_ticket(args: argparse.Namespace) -> int:
    info = describe(Ticket.parse_any(args.ticket.strip()))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"kind:        {info['kind']}")
    if "endpoint_id" in info:
        print(f"endpoint id: {info['endpoint_id']}")
        for url in info["relay_urls"]:
            print(f"relay url:   {url}")
        for ip in info["ip_addrs"]:
            print(f"ip addr:     {ip}")
    return 0
