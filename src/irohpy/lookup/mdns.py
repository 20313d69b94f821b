"""Local-network address lookup over mDNS, in iroh's (swarm-discovery's) exact format.

iroh does not speak plain DNS-SD: responses carry no PTR answer, every record has TTL 0, and
addresses hang off per-port SRV targets named ``<peerid>-<port>.local.``. python-zeroconf
cannot produce that, so this module builds and parses the messages itself with dnspython
(sans-IO: :func:`build_query`, :func:`build_response`, :func:`parse_message`,
:class:`PeerTable`) and drives them with a thin asyncio layer (:class:`MdnsLookup`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from irohpy.base.addr import IpAddr
from irohpy.base.keys import EndpointId, PublicKey, decode_base32
from irohpy.base.relay_url import RelayUrl
from irohpy.errors import BindError, IrohError, MdnsError
from irohpy.lookup.base import EndpointData, EndpointInfo, LookupItem

SERVICE: Final = dns.name.from_text("_irohv1._udp.local.")
MDNS_GROUP_V4: Final = "224.0.0.251"
MDNS_GROUP_V6: Final = "ff02::fb"
MDNS_PORT: Final = 5353
PROVENANCE: Final = "mdns"
QUERY_INTERVAL: Final = 0.7
RESPONSE_WINDOW: Final = 0.1
RESOLVE_TIMEOUT: Final = 10.0
PEER_EXPIRY: Final = 5.0


# -- sans-IO: messages ---------------------------------------------------------------------


def peer_label(endpoint_id: EndpointId) -> str:
    """The instance label: lowercase unpadded RFC 4648 base32 of the key (52 characters)."""
    return endpoint_id.to_base32()


def build_query() -> bytes:
    """The PTR question for ``_irohv1._udp.local.`` that iroh sends every τ."""
    msg = dns.message.make_query(SERVICE, dns.rdatatype.PTR, dns.rdataclass.IN)
    msg.id = 0
    msg.flags = 0
    return msg.to_wire()


def _txt_strings(data: EndpointData) -> list[bytes]:
    """``relay=`` (first relay in iroh's order) and ``user-data=``; a DNS string holds ≤ 255 bytes."""
    strings: list[bytes] = []
    if data.relay_urls:
        strings.append(b"relay=" + str(min(data.relay_urls, key=str)).encode())
    if data.user_data is not None:
        strings.append(b"user-data=" + data.user_data.encode())
    return [s for s in strings if len(s) <= 255]


def build_response(endpoint_id: EndpointId, data: EndpointData) -> bytes | None:
    """Our announcement: authoritative, TTL 0, SRV per port + A/AAAA additionals, TXT; no PTR.

    Returns ``None`` when there is nothing to announce.
    """
    label = peer_label(endpoint_id)
    instance = dns.name.Name((label.encode(),)).concatenate(SERVICE)
    msg = dns.message.Message(id=0)
    msg.flags = dns.flags.QR | dns.flags.AA
    by_port: dict[int, list[IpAddr]] = {}
    for addr in sorted(data.ip_addrs):
        by_port.setdefault(addr.port, []).append(addr)
    for port, addrs in sorted(by_port.items()):
        target = dns.name.from_text(f"{label}-{port}.local.")
        srv = dns.rdata.from_text("IN", "SRV", f"0 0 {port} {target}")
        msg.answer.append(dns.rrset.from_rdata(instance, 0, srv))
        for addr in addrs:
            rtype = "A" if addr.host.version == 4 else "AAAA"
            rdata = dns.rdata.from_text("IN", rtype, addr.host.compressed)
            msg.additional.append(dns.rrset.from_rdata(target, 0, rdata))
    strings = _txt_strings(data)
    if strings:
        txt_rdata = TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)
        msg.answer.append(dns.rrset.from_rdata(instance, 0, txt_rdata))
    if not msg.answer:
        return None
    return msg.to_wire()


@dataclass(frozen=True)
class MdnsQuery:
    """A PTR question for iroh's service: the cue to answer."""


@dataclass(frozen=True)
class MdnsAnnouncements:
    """Endpoints announced in one response, keyed by EndpointId."""

    endpoints: tuple[EndpointInfo, ...]


def _peer_id(name: dns.name.Name) -> EndpointId | None:
    """The EndpointId in ``<peerid>._irohv1._udp.local.``, or None if it is not one of ours."""
    if len(name.labels) != len(SERVICE.labels) + 1 or not name.is_subdomain(SERVICE):
        return None
    try:
        return PublicKey.from_bytes(decode_base32(name.labels[0].decode("ascii")))
    except (UnicodeDecodeError, IrohError):
        return None


def _parse_txt(strings: Iterable[bytes], relays: set[RelayUrl], user: list[str]) -> None:
    for raw in strings:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            continue
        key, sep, value = text.partition("=")
        if not sep:
            continue
        if key == "relay":
            try:
                relays.add(RelayUrl(value))
            except IrohError:
                continue
        elif key == "user-data":
            user.append(value)


def parse_message(wire: bytes) -> MdnsQuery | MdnsAnnouncements | None:
    """Classify one datagram: a query for us, iroh announcements, or None (someone else's).

    Raises :class:`MdnsError` for bytes that are not a DNS message.
    """
    try:
        msg = dns.message.from_wire(wire, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, UnicodeError, IndexError, struct.error) as exc:
        raise MdnsError(f"not a DNS message: {type(exc).__name__}") from None
    if not msg.flags & dns.flags.QR:
        for q in msg.question:
            if q.rdclass & 0x7FFF == dns.rdataclass.IN and q.rdtype == dns.rdatatype.PTR and q.name == SERVICE:
                return MdnsQuery()
        return None
    ports: dict[dns.name.Name, list[tuple[EndpointId, int]]] = {}
    relays: dict[EndpointId, set[RelayUrl]] = {}
    users: dict[EndpointId, list[str]] = {}
    for rrset in msg.answer:
        peer = _peer_id(rrset.name)
        if peer is None:
            continue
        for rdata in rrset:
            if isinstance(rdata, SRV):
                ports.setdefault(rdata.target, []).append((peer, rdata.port))
            elif isinstance(rdata, TXT):
                _parse_txt(rdata.strings, relays.setdefault(peer, set()), users.setdefault(peer, []))
    addrs: dict[EndpointId, set[IpAddr]] = {}
    for rrset in msg.additional:
        for rdata in rrset:
            if isinstance(rdata, A | AAAA) and rrset.name in ports:
                host = ipaddress.ip_address(rdata.address)
                for peer, port in ports[rrset.name]:
                    addrs.setdefault(peer, set()).add(IpAddr(host, port))
    peers = set(addrs) | set(relays) | set(users)
    infos = tuple(
        EndpointInfo(
            peer,
            EndpointData(
                frozenset(relays.get(peer, ())),
                frozenset(addrs.get(peer, ())),
                users[peer][0] if users.get(peer) else None,
            ),
        )
        for peer in sorted(peers)
    )
    return MdnsAnnouncements(infos)


# -- sans-IO: what we know about others ----------------------------------------------------


class PeerTable:
    """Endpoints heard recently; entries expire ``expiry`` seconds after they were last heard.

    TTL 0 in iroh's records means "do not cache", so freshness is tracked here instead.
    """

    def __init__(self, expiry: float = PEER_EXPIRY) -> None:
        self._expiry = expiry
        self._peers: dict[EndpointId, tuple[EndpointInfo, float, int]] = {}

    def update(self, info: EndpointInfo, now: float) -> bool:
        """Record ``info``; True when it is new or differs from what was known."""
        old = self._peers.get(info.endpoint_id)
        if old is not None and old[0] == info:
            self._peers[info.endpoint_id] = (info, now, old[2])
            return False
        self._peers[info.endpoint_id] = (info, now, time.time_ns() // 1000)
        return True

    def expire(self, now: float) -> list[EndpointId]:
        """Forget endpoints not heard from within the expiry; returns the ones dropped."""
        gone = [k for k, (_, seen, _) in self._peers.items() if now - seen > self._expiry]
        for key in gone:
            del self._peers[key]
        return gone

    def get(self, endpoint_id: EndpointId) -> LookupItem | None:
        entry = self._peers.get(endpoint_id)
        return LookupItem(entry[0], PROVENANCE, entry[2]) if entry else None

    def infos(self) -> list[EndpointInfo]:
        return [info for info, _, _ in self._peers.values()]


# -- asyncio driver ------------------------------------------------------------------------


def _multicast_socket(interface: str | None) -> tuple[socket.socket, tuple[str, int] | tuple[str, int, int, int]]:
    """A UDP socket on port 5353 joined to the mDNS group on ``interface``, and where to send.

    An IPv4 address joins 224.0.0.251 on that interface; an IPv6 address with a ``%scope``
    (interface name or index) joins ff02::fb on that interface; ``None`` joins 224.0.0.251 on
    the default multicast interface.
    """
    scoped = interface if interface is not None and ":" in interface else None
    sock = socket.socket(socket.AF_INET if scoped is None else socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if scoped is not None:
            _, _, scope = scoped.partition("%")
            if not scope:
                raise OSError("an IPv6 interface needs a %scope naming the interface")
            index = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            sock.bind(("::", MDNS_PORT))
            mreq6 = socket.inet_pton(socket.AF_INET6, MDNS_GROUP_V6) + struct.pack("@I", index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
            destination: tuple[str, int] | tuple[str, int, int, int] = (MDNS_GROUP_V6, MDNS_PORT, 0, index)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            local = socket.inet_aton(interface or "0.0.0.0")
            if interface is not None:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, local)
            sock.bind(("", MDNS_PORT))
            mreq = struct.pack("4s4s", socket.inet_aton(MDNS_GROUP_V4), local)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            destination = (MDNS_GROUP_V4, MDNS_PORT)
        sock.setblocking(False)
    except (OSError, ValueError) as exc:
        sock.close()
        raise BindError(f"cannot join mDNS on {interface or 'the default interface'}: {exc}") from exc
    return sock, destination


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: MdnsLookup) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._owner._on_datagram(data)


class MdnsLookup:
    """Announce our endpoint on the LAN and find others, interoperable with iroh's mDNS lookup.

    ``interfaces`` are addresses of the interfaces to use: IPv4 (joins 224.0.0.251) or IPv6
    with a ``%scope`` (joins ff02::fb); ``None`` uses the default IPv4 multicast interface.
    Call :meth:`start` (or use ``async with``) before use.
    """

    def __init__(
        self,
        endpoint_id: EndpointId,
        *,
        interfaces: Sequence[str] | None = None,
        query_interval: float = QUERY_INTERVAL,
        resolve_timeout: float = RESOLVE_TIMEOUT,
        expiry: float = PEER_EXPIRY,
    ) -> None:
        self.endpoint_id = endpoint_id
        self._interfaces: list[str | None] = list(interfaces) if interfaces is not None else [None]
        self._query_interval = query_interval
        self._resolve_timeout = resolve_timeout
        self._table = PeerTable(expiry)
        self._response: bytes | None = None
        self._transports: list[tuple[asyncio.DatagramTransport, tuple[str, int] | tuple[str, int, int, int]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscribers: set[asyncio.Queue[EndpointInfo | None]] = set()
        self._changed = asyncio.Event()
        self._answer_pending = False
        self._closed = False

    async def start(self) -> None:
        """Open the multicast sockets and begin querying."""
        loop = asyncio.get_running_loop()
        try:
            for interface in self._interfaces:
                sock, destination = _multicast_socket(interface)
                transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
                self._transports.append((transport, destination))
        except BaseException:
            await self.close()
            raise
        if self._response is not None:
            self._send(self._response)
        self._spawn(self._query_loop())

    async def __aenter__(self) -> MdnsLookup:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, wire: bytes) -> None:
        for transport, destination in self._transports:
            if not transport.is_closing():
                transport.sendto(wire, destination)

    async def _query_loop(self) -> None:
        """Query every τ (jittered) and drop peers that stopped answering."""
        query = build_query()
        while True:
            self._send(query)
            await asyncio.sleep(self._query_interval * random.uniform(1.0, 1.1))
            self._table.expire(time.monotonic())

    async def _respond_later(self) -> None:
        """Answer after a random delay within the response window, as swarm-discovery does.

        Queries arriving meanwhile share this one answer.
        """
        await asyncio.sleep(random.uniform(0, RESPONSE_WINDOW))
        self._answer_pending = False
        if self._response is not None:
            self._send(self._response)

    def _on_datagram(self, data: bytes) -> None:
        try:
            parsed = parse_message(data)
        except MdnsError:
            return
        if isinstance(parsed, MdnsQuery):
            if self._response is not None and not self._closed and not self._answer_pending:
                self._answer_pending = True
                self._spawn(self._respond_later())
        elif parsed is not None:
            now = time.monotonic()
            for info in parsed.endpoints:
                if info.endpoint_id != self.endpoint_id and self._table.update(info, now):
                    for queue in self._subscribers:
                        queue.put_nowait(info)
                    self._changed.set()

    def publish(self, data: EndpointData) -> None:
        """Announce ``data`` now and in answer to every later query."""
        self._response = build_response(self.endpoint_id, data)
        if self._response is not None:
            self._send(self._response)

    async def resolve(self, endpoint_id: EndpointId) -> AsyncIterator[LookupItem]:
        """The endpoint's announced data, waiting up to the resolve timeout for it to appear."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._resolve_timeout
        while not self._closed:
            item = self._table.get(endpoint_id)
            if item is not None:
                yield item
                return
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return

    async def subscribe(self) -> AsyncIterator[EndpointInfo]:
        """Every endpoint known now, then each newly discovered or changed one.

        Ends when the lookup is closed (a subscription has no timeout of its own; wrap each
        step in ``asyncio.wait_for`` or stop iterating to bound it).
        """
        queue: asyncio.Queue[EndpointInfo | None] = asyncio.Queue()
        for info in self._table.infos():
            queue.put_nowait(info)
        if self._closed:
            queue.put_nowait(None)
        self._subscribers.add(queue)
        try:
            while (info := await queue.get()) is not None:
                yield info
        finally:
            self._subscribers.discard(queue)

    async def close(self) -> None:
        """Stop querying and answering, close the sockets, end subscriptions."""
        self._closed = True
        self._response = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for transport, _ in self._transports:
            transport.close()
        self._transports.clear()
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._changed.set()
        await asyncio.sleep(0)


__all__ = [
    "MdnsAnnouncements",
    "MdnsLookup",
    "MdnsQuery",
    "PeerTable",
    "build_query",
    "build_response",
    "parse_message",
    "peer_label",
]
