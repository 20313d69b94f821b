"""``irohpy ticket inspect``: a ticket explorer."""

from __future__ import annotations

import argparse
import json
from typing import Any

from irohpy.base.ticket import EndpointTicket, Ticket
from irohpy.protocols.blobs.ticket import BlobTicket
from irohpy.protocols.gossip.ticket import GossipTicket


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("ticket", help="work with tickets")
    tickets = parser.add_subparsers(dest="ticket_command", required=True, metavar="SUBCOMMAND")
    inspect = tickets.add_parser("inspect", help="show what a ticket holds")
    inspect.add_argument("ticket", metavar="TICKET")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=inspect_ticket)


def describe(ticket: Ticket) -> dict[str, Any]:
    """The fields of every kind we know (importing the protocols registers blob and gossip)."""
    info: dict[str, Any] = {"kind": ticket.KIND}
    addrs = []
    if isinstance(ticket, (EndpointTicket, BlobTicket)):
        addrs = [ticket.addr]
    if isinstance(ticket, BlobTicket):
        info["hash"] = ticket.hash.hex()
        info["format"] = ticket.format.name.lower()
    if isinstance(ticket, GossipTicket):
        info["topic"] = ticket.topic.to_bytes().hex()
        addrs = list(ticket.bootstrap)
    if addrs:
        info["endpoint_id"] = str(addrs[0].id)
        info["relay_urls"] = [str(u) for u in addrs[0].relay_urls()]
        info["ip_addrs"] = [str(a) for a in addrs[0].ip_addrs()]
    if len(addrs) > 1:
        info["bootstrap"] = [str(a.id) for a in addrs]
    return info


def inspect_ticket(args: argparse.Namespace) -> int:
    info = describe(Ticket.parse_any(args.ticket.strip()))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"kind:        {info['kind']}")
    for field in ("hash", "format", "topic"):
        if field in info:
            print(f"{field + ':':<13}{info[field]}")
    if "endpoint_id" in info:
        print(f"endpoint id: {info['endpoint_id']}")
        for url in info["relay_urls"]:
            print(f"relay url:   {url}")
        for ip in info["ip_addrs"]:
            print(f"ip addr:     {ip}")
    return 0
