"""``irohpy chat``: a terminal chat room over gossip, like iroh-gossip's chat example.

``chat open NAME`` creates a room and prints a ticket; ``chat join TICKET NAME`` enters it.
Lines typed on stdin go to everyone in the room. Every message carries its author's key and
name and is signed with the author's endpoint key, so a relaying peer cannot forge or alter it;
one that fails verification is shown marked ``(unverified)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from dataclasses import dataclass

from irohpy.base.keys import PublicKey, SecretKey, Signature
from irohpy.base.postcard import Reader, Writer
from irohpy.cli.common import add_endpoint_args, endpoint_from_args, eprint
from irohpy.cli.stdio import StdinReader
from irohpy.base.addr import EndpointAddr
from irohpy.errors import DecodeError, GossipError, InvalidSignature
from irohpy.protocols.gossip import Gossip, GossipSender, NeighborDown, NeighborUp, Received, TopicId
from irohpy.protocols.gossip.ticket import GossipTicket
from irohpy.protocols.router import Router

SIGNING_CONTEXT = b"irohpy-chat-v1:"
JOIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class ChatMessage:
    """One chat line; ``nonce`` keeps repeated texts distinct (gossip drops identical content)."""

    author: PublicKey
    name: str
    text: str
    nonce: int
    verified: bool = True


def _body(name: str, text: str, nonce: int) -> bytes:
    return Writer().str_(name).str_(text).u64(nonce).finish()


def encode_chat(secret: SecretKey, name: str, text: str, nonce: int | None = None) -> bytes:
    """postcard ``{author: [u8; 32], body: bytes, signature: [u8; 64]}``; body = {name, text, nonce}."""
    nonce = int.from_bytes(os.urandom(8)) if nonce is None else nonce
    body = _body(name, text, nonce)
    signature = secret.sign(SIGNING_CONTEXT + body)
    return Writer().fixed(secret.public().to_bytes(), 32).bytes_(body).fixed(signature.to_bytes(), 64).finish()


def decode_chat(data: bytes) -> ChatMessage:
    """Parse a chat message; a bad signature gives ``verified=False``, garbage a DecodeError."""
    r = Reader(data)
    author = PublicKey.from_bytes(r.fixed(32))
    body = r.bytes_()
    signature = Signature.from_bytes(r.fixed(64))
    r.finish()
    inner = Reader(body)
    name, text, nonce = inner.str_(), inner.str_(), inner.u64()
    inner.finish()
    try:
        author.verify(SIGNING_CONTEXT + body, signature)
        verified = True
    except InvalidSignature:
        verified = False
    return ChatMessage(author, name, text, nonce, verified)


def format_chat(msg: ChatMessage) -> str:
    mark = "" if msg.verified else " (unverified)"
    return f"{msg.name} [{msg.author.fmt_short()}]{mark}: {msg.text}"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("chat", help="chat in a gossip room on stdin/stdout")
    roles = parser.add_subparsers(dest="chat_role", required=True, metavar="ROLE")
    open_ = roles.add_parser("open", help="open a new room and print its ticket")
    open_.add_argument("name", metavar="NAME", help="your name in the room")
    add_endpoint_args(open_)
    open_.set_defaults(func=open_room)
    join = roles.add_parser("join", help="join the room in TICKET")
    join.add_argument("ticket", metavar="TICKET")
    join.add_argument("name", metavar="NAME", help="your name in the room")
    add_endpoint_args(join)
    join.set_defaults(func=join_room)


async def open_room(args: argparse.Namespace) -> int:
    topic = TopicId.from_bytes(os.urandom(32))
    return await _chat(args, topic, (), announce=True)


async def join_room(args: argparse.Namespace) -> int:
    ticket = GossipTicket.parse(args.ticket.strip())
    return await _chat(args, ticket.topic, ticket.bootstrap, announce=False)


async def _chat(args: argparse.Namespace, topic_id: TopicId, bootstrap: tuple[EndpointAddr, ...], announce: bool) -> int:
    endpoint = await endpoint_from_args(args)
    gossip = Gossip(endpoint)
    async with Router.builder(endpoint).accept(gossip.alpn, gossip).spawn():
        topic = await gossip.subscribe(topic_id, bootstrap)
        ticket = GossipTicket(topic_id, (endpoint.addr(),))
        if announce:
            print(ticket, flush=True)
            eprint(f"room open; to join, run: irohpy chat join {ticket} NAME")
        else:
            await topic.joined(JOIN_TIMEOUT)
            eprint(f"joined; others can also join with: irohpy chat join {ticket} NAME")
        sender, receiver = topic.split()
        typing = asyncio.ensure_future(_send_lines(sender, endpoint.secret_key, args.name))
        try:
            async for event in receiver:
                if isinstance(event, Received):
                    try:
                        print(format_chat(decode_chat(event.content)), flush=True)
                    except DecodeError:
                        eprint(f"dropped a malformed message relayed by {event.delivered_from.fmt_short()}")
                elif isinstance(event, NeighborUp):
                    eprint(f"neighbor up: {event.endpoint_id.fmt_short()}")
                elif isinstance(event, NeighborDown):
                    eprint(f"neighbor down: {event.endpoint_id.fmt_short()}")
        finally:
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing
    return 0


async def _send_lines(sender: GossipSender, secret: SecretKey, name: str) -> None:
    """Broadcast each stdin line; at end of input keep listening until Ctrl-C."""
    stdin = StdinReader()
    pending = b""
    while chunk := await stdin.read():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip("\r")
            if not text:
                continue
            try:
                await sender.broadcast(encode_chat(secret, name, text))
            except GossipError as exc:
                eprint(f"not sent: {exc}")
