"""The sans-IO QUIC endpoint: many connections behind one socket, routed by connection ID.

:class:`QuicEndpoint` sits between a UDP socket and its :class:`QuicConnection` objects. A driver
hands it receive bursts and the clock; it hands back transmits, new connections and one
deadline. Nothing here touches a socket, asyncio or the wall clock:

- ``receive(batch, now)`` with ``[(datagram, remote address), ...]``; returns the connections an
  Initial just created (a server's new-connection events);
- ``connect(remote, expected_peer, alpns, now)`` starts a client connection;
- ``wake(conn)`` after the application queued data or closed a connection;
- ``handle_timeout(now)`` when ``deadline()`` has passed;
- ``transmits(now)`` for what to send: :class:`Transmit` runs of equal-size datagrams to one
  address (the last may be shorter), ready for one GSO ``sendmsg`` each;
- ``touched()`` lists the connections that may have events to read since the last call.

What it answers without a connection (RFC 9000 §5.2, §6, §8.1, §10.3): Version Negotiation for
unknown versions, Retry when the policy asks for address validation, stateless resets for
short-header packets nobody owns. A datagram that is not a valid, decryptable Initial allocates
nothing: the Initial is decrypted with the keys its DCID implies before any state is made.
"""

from __future__ import annotations

import heapq
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from irohpy.errors import QuicDecodeError, QuicError
from irohpy.quic.cids import reset_token
from irohpy.quic.connection import Address, QuicConfig, QuicConnection
from irohpy.quic.crypto import hkdf_expand_label, hkdf_extract, initial_protection
from irohpy.quic.buffer import Writer
from irohpy.quic.frames import ConnectionClose, Crypto, decode_frames
from irohpy.quic.handshake import Handshake, iroh_handshake
from irohpy.quic.packet import (
    MIN_INITIAL_DATAGRAM,
    PACKET_INITIAL,
    PACKET_UNSUPPORTED_VERSION,
    STATELESS_RESET_MAX,
    STATELESS_RESET_MIN,
    Packet,
    build_long_header,
    build_retry,
    build_stateless_reset,
    build_version_negotiation,
    open_packet,
    parse_packet,
    seal_packet,
    stateless_reset_token,
    unprotect_headers,
)
from irohpy.tls.keys import private_key
from irohpy.tls.resumption import TicketCache, TicketStore

#: Datagrams of one GSO send at most, and its payload bound (as the socket layer's).
GSO_MAX_SEGMENTS: Final = 64
GSO_MAX_BYTES: Final = 65000
_NONCE: Final = 12
#: Datagrams an undecided offer keeps (the client's first flight, from the offer's address).
OFFER_DATAGRAMS: Final = 8
#: How long a refused or ignored offer's DCID stays known, so that the client's retransmitted
#: Initials do not come back as new offers; and how many such DCIDs are kept at most.
DEAD_CID_TTL: Final = 10.0
MAX_DEAD_CIDS: Final = 4096
_TOKEN_TIME: Final = struct.Struct(">d")

@dataclass(slots=True)
class Transmit:
    """Datagrams to one address, all ``segment_size`` bytes but the last (which may be shorter)."""

    addr: Address
    segment_size: int
    datagrams: list[bytes]


def never_retry(addr: Address, handshaking: int) -> bool:
    """The default policy: accept without a Retry round trip."""
    return False


def always_retry(addr: Address, handshaking: int) -> bool:
    """Validate every client address with a Retry first."""
    return True


def retry_under_load(threshold: int) -> Callable[[Address, int], bool]:
    """A policy that asks for Retry once ``threshold`` handshakes are under way."""

    def policy(addr: Address, handshaking: int) -> bool:
        return handshaking >= threshold

    return policy


@dataclass(slots=True)
class EndpointConfig:
    """One endpoint's settings; ``transport`` is the template each connection copies."""

    transport: QuicConfig = field(default_factory=lambda: QuicConfig(is_client=True))
    #: Secret behind stateless reset tokens and Retry tokens; the same key after a restart
    #: lets the new endpoint reset the old one's connections. Random if not given.
    static_key: bytes = b""
    #: ALPNs we accept as a server; empty: the endpoint only dials.
    alpns: Sequence[bytes] = ()
    #: Server handshakes under way at once; Initials beyond it are dropped.
    max_handshakes: int = 256
    max_connections: int = 10_000
    #: ``policy(addr, handshakes_under_way) -> bool``: answer a token-less Initial with Retry.
    retry_policy: Callable[[Address, int], bool] = never_retry
    retry_token_lifetime: float = 10.0
    #: Stateless packets (Version Negotiation, Retry, stateless reset) per second, and burst.
    stateless_rate: float = 200.0
    stateless_burst: int = 50
    #: A server's session tickets (single use): resumption and 0-RTT; None: full handshakes.
    ticket_store: TicketStore | None = None
    #: A client's tickets from the servers it dialed, for resuming (and 0-RTT) next time.
    ticket_cache: TicketCache | None = None
    #: Accept (server) or attempt (client) 0-RTT when a ticket allows it.
    early_data: bool = True
    #: Hold each valid new Initial as an :class:`Offer` the driver accepts, refuses or ignores
    #: (it then counts as a handshake under way until decided); False: accept at once.
    offer_initials: bool = False
    #: Makes each server connection's TLS; None: iroh's (raw public keys, our secret key).
    server_handshake: Callable[[], Handshake] | None = None


@dataclass(slots=True, eq=False)
class Offer:
    """A client's valid Initial held for the driver to decide on; no connection exists yet."""

    addr: Address
    dcid: bytes
    scid: bytes
    #: Set after a Retry whose token the client returned: its first DCID and our Retry's SCID.
    original_dcid: bytes | None
    retry_scid: bytes | None
    datagrams: list[bytes]

    @property
    def validated(self) -> bool:
        """The client proved it receives at ``addr`` (it came back with our Retry token)."""
        return self.retry_scid is not None


@dataclass(slots=True)
class EndpointStats:
    """Counters that show what the endpoint did with what it could not route."""

    datagrams: int = 0
    dropped: int = 0
    #: Initials that did not decrypt or carried no CRYPTO frame.
    initials_rejected: int = 0
    #: Initials turned away because ``max_handshakes`` or ``max_connections`` was reached.
    initials_over_limit: int = 0
    connections: int = 0
    version_negotiations: int = 0
    retries: int = 0
    retry_tokens_rejected: int = 0
    resets_sent: int = 0
    stateless_limited: int = 0


class _Bucket:
    """A token bucket bounding what the endpoint sends for packets it holds no state for."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = -1.0

    def take(self, now: float) -> bool:
        if self.last >= 0.0 and now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _Entry:
    """What the endpoint keeps per connection: its routes, address and timer slot."""

    __slots__ = ("conn", "cids", "cids_seen", "initial_dcid", "addr", "handshaking", "timer", "removed", "sent", "received")

    def __init__(self, conn: QuicConnection, addr: Address, initial_dcid: bytes, handshaking: bool) -> None:
        self.conn = conn
        self.cids: list[bytes] = []
        #: The connection's ``cids_changes`` when ``cids`` was read.
        self.cids_seen = -1
        self.initial_dcid = initial_dcid
        self.addr = addr
        self.handshaking = handshaking
        self.timer: float | None = None
        self.removed = False
        #: Datagrams and bytes this connection handed out to send, and was routed.
        self.sent = [0, 0]
        self.received = [0, 0]


class QuicEndpoint:
    """Connections of one socket: routing, stateless answers, timers; see the module docstring."""

    __slots__ = (
        "config",
        "stats",
        "_secret_key",
        "_cid_length",
        "_reset_key",
        "_retry_aead",
        "_routes",
        "_by_addr",
        "_entries",
        "_dirty",
        "_touched",
        "_timers",
        "_timer_seq",
        "_handshaking",
        "_stateless",
        "_bucket",
        "_offers",
        "_new_offers",
        "_dead",
    )

    def __init__(self, secret_key: bytes, config: EndpointConfig | None = None) -> None:
        """``secret_key``: our Ed25519 secret (the EndpointId's), for every TLS handshake."""
        self.config = config = config if config is not None else EndpointConfig()
        self.stats = EndpointStats()
        # Loaded once: deriving the key from its seed costs a scalar multiplication (about
        # 45 µs), which every handshake paid when it was handed the seed.
        self._secret_key: Ed25519PrivateKey = private_key(secret_key)
        self._cid_length = config.transport.cid_length
        static = config.static_key or os.urandom(32)
        prk = hkdf_extract(b"irohpy quic endpoint", static)
        self._reset_key = hkdf_expand_label(prk, b"stateless reset", b"", 32)
        self._retry_aead = AESGCM(hkdf_expand_label(prk, b"retry token", b"", 16))
        self._routes: dict[bytes, _Entry] = {}
        self._by_addr: dict[Address, list[_Entry]] = {}
        self._entries: dict[QuicConnection, _Entry] = {}
        self._dirty: dict[_Entry, None] = {}
        self._touched: dict[QuicConnection, None] = {}
        self._timers: list[tuple[float, int, _Entry]] = []
        self._timer_seq = 0
        self._handshaking = 0
        self._stateless: list[tuple[Address, bytes]] = []
        self._bucket = _Bucket(config.stateless_rate, config.stateless_burst)
        self._offers: dict[bytes, Offer] = {}
        self._new_offers: list[Offer] = []
        self._dead: dict[bytes, float] = {}

    # -- introspection ------------------------------------------------------------------

    @property
    def connections(self) -> list[QuicConnection]:
        return list(self._entries)

    @property
    def handshakes_under_way(self) -> int:
        return self._handshaking

    def routes(self) -> dict[bytes, QuicConnection]:
        """Every destination CID we route, and to which connection."""
        return {cid: e.conn for cid, e in self._routes.items()}

    def sent(self, conn: QuicConnection) -> tuple[int, int]:
        """Datagrams and bytes ``conn`` sent so far (zeros once it is let go)."""
        entry = self._entries.get(conn)
        return (entry.sent[0], entry.sent[1]) if entry is not None else (0, 0)

    def received(self, conn: QuicConnection) -> tuple[int, int]:
        """Datagrams and bytes routed to ``conn`` so far (zeros once it is let go)."""
        entry = self._entries.get(conn)
        return (entry.received[0], entry.received[1]) if entry is not None else (0, 0)

    def route(self, dcid: bytes) -> QuicConnection | None:
        """The connection datagrams with this destination CID go to, if any."""
        entry = self._routes.get(dcid)
        return entry.conn if entry is not None else None

    def readdress(self, conn: QuicConnection, addr: Address) -> None:
        """Name the connection's peer ``addr`` from now on (a driver that maps paths to stable
        per-peer addresses renames a server connection once its Initial made it)."""
        entry = self._entries.get(conn)
        if entry is None or entry.addr == addr:
            return
        peers = self._by_addr.get(entry.addr)
        if peers is not None:
            peers.remove(entry)
            if not peers:
                del self._by_addr[entry.addr]
        entry.addr = addr
        self._by_addr.setdefault(addr, []).append(entry)
        conn.path.addr = addr

    # -- client -------------------------------------------------------------------------

    def connect(
        self,
        remote: Address,
        expected_peer: bytes,
        alpns: Sequence[bytes],
        now: float,
        *,
        handshake: Handshake | None = None,
        transport: QuicConfig | None = None,
    ) -> QuicConnection:
        """Start dialing ``remote``, authenticating it as ``expected_peer`` (its EndpointId).

        ``handshake`` and ``transport`` replace iroh's TLS and the endpoint's transport settings
        for this connection (a QAD probe to a relay, say)."""
        if handshake is None:
            handshake = iroh_handshake(
                self._secret_key,
                is_client=True,
                alpns=alpns,
                expected_peer=expected_peer,
                ticket_cache=self.config.ticket_cache,
                early_data=self.config.early_data,
            )
        settings = transport if transport is not None else self.config.transport
        if settings.cid_length != self._cid_length:
            raise QuicError("connection ID length differs from the endpoint's", error_code=QuicError.INTERNAL_ERROR)
        conn = QuicConnection(
            replace(settings, is_client=True), handshake, cid=self._fresh_cid(), reset_key=self._reset_key
        )
        conn.connect(remote, now)
        entry = _Entry(conn, remote, b"", False)
        self._add(entry)
        return conn

    def _fresh_cid(self) -> bytes:
        while True:
            cid = os.urandom(self._cid_length)
            if cid not in self._routes:
                return cid

    # -- receive ------------------------------------------------------------------------

    def receive(self, batch: Sequence[tuple[bytes, Address]], now: float) -> list[QuicConnection]:
        """One receive burst; returns the server connections it created."""
        created: list[QuicConnection] = []
        routes = self._routes
        cid_length = self._cid_length
        groups: dict[_Entry, tuple[Address, list[bytes]]] = {}
        self.stats.datagrams += len(batch)
        for data, addr in batch:
            if not data:
                self.stats.dropped += 1
                continue
            long_header = data[0] & 0x80
            if long_header:
                if len(data) < 6:
                    self.stats.dropped += 1
                    continue
                dcid = data[6 : 6 + data[5]]
            else:
                dcid = data[1 : 1 + cid_length]
            entry = routes.get(dcid)
            if entry is None:
                if long_header:
                    offer = self._offers.get(dcid)
                    if offer is not None:
                        if offer.addr == addr and len(offer.datagrams) < OFFER_DATAGRAMS:
                            offer.datagrams.append(data)
                        continue
                    entry = self._on_unknown_long(data, addr, now)
                    if entry is None:
                        continue
                    created.append(entry.conn)
                else:
                    self._on_unknown_short(data, addr, now)
                    continue
            received = entry.received
            received[0] += 1
            received[1] += len(data)
            group = groups.get(entry)
            if group is None:
                groups[entry] = (addr, [data])
            elif group[0] == addr:
                group[1].append(data)
            else:
                entry.conn.receive_datagram(data, addr, now)
        for entry, (addr, datagrams) in groups.items():
            entry.conn.receive_datagrams(datagrams, addr, now)
            self._dirty[entry] = None
        return created

    def _on_unknown_long(self, data: bytes, addr: Address, now: float) -> _Entry | None:
        """A long header nobody owns: answer VN, Retry, or make a connection for a valid Initial."""
        config = self.config
        try:
            packet = parse_packet(data, 0, self._cid_length)
        except QuicDecodeError:
            self.stats.dropped += 1
            return None
        if packet.packet_type == PACKET_UNSUPPORTED_VERSION:
            # Only a datagram a client could start with earns an answer (RFC 9000 §6.1, §14.1).
            if len(data) >= MIN_INITIAL_DATAGRAM and config.alpns:
                if self._bucket.take(now):
                    self._stateless.append((addr, build_version_negotiation(packet.scid, packet.dcid)))
                    self.stats.version_negotiations += 1
                else:
                    self.stats.stateless_limited += 1
            else:
                self.stats.dropped += 1
            return None
        if (
            packet.packet_type != PACKET_INITIAL
            or not config.alpns
            or len(data) < MIN_INITIAL_DATAGRAM
            or len(packet.dcid) < 8
        ):
            self.stats.dropped += 1
            return None
        if self._handshaking >= config.max_handshakes or len(self._entries) >= config.max_connections:
            self.stats.initials_over_limit += 1
            return None
        dead = self._dead.get(packet.dcid)
        if dead is not None:
            if dead > now:
                self.stats.dropped += 1
                return None
            del self._dead[packet.dcid]
        if not _initial_is_valid(packet):
            self.stats.initials_rejected += 1
            return None
        original_dcid: bytes | None = None
        retry_scid: bytes | None = None
        if packet.token:
            original_dcid = self._check_retry_token(packet.token, addr, packet.dcid, now)
            if original_dcid is None:
                self.stats.retry_tokens_rejected += 1
                return None
            retry_scid = packet.dcid
        elif config.retry_policy(addr, self._handshaking):
            if self._bucket.take(now):
                scid = self._fresh_cid()
                token = self._retry_token(addr, packet.dcid, scid, now)
                self._stateless.append((addr, build_retry(packet.scid, scid, packet.dcid, token)))
                self.stats.retries += 1
            else:
                self.stats.stateless_limited += 1
            return None
        if config.offer_initials:
            offer = Offer(addr, packet.dcid, packet.scid, original_dcid, retry_scid, [data])
            self._offers[packet.dcid] = offer
            self._new_offers.append(offer)
            self._handshaking += 1
            return None
        return self._server_connection(addr, packet.dcid, original_dcid, retry_scid)

    def _server_connection(
        self, addr: Address, dcid: bytes, original_dcid: bytes | None, retry_scid: bytes | None
    ) -> _Entry:
        config = self.config
        if config.server_handshake is not None:
            handshake = config.server_handshake()
        else:
            handshake = iroh_handshake(
                self._secret_key,
                is_client=False,
                alpns=list(config.alpns),
                ticket_store=config.ticket_store,
                early_data=config.early_data,
            )
        conn = QuicConnection(
            replace(config.transport, is_client=False),
            handshake,
            cid=self._fresh_cid(),
            original_dcid=original_dcid,
            retry_scid=retry_scid,
            reset_key=self._reset_key,
        )
        entry = _Entry(conn, addr, dcid, True)
        self._handshaking += 1
        self._add(entry)
        self.stats.connections += 1
        return entry

    # -- offers -------------------------------------------------------------------------

    def offers(self) -> list[Offer]:
        """Offers made since the last call (``offer_initials``); each awaits a decision."""
        out = self._new_offers
        self._new_offers = []
        return out

    def _decide(self, offer: Offer) -> bool:
        if self._offers.get(offer.dcid) is not offer:
            return False
        del self._offers[offer.dcid]
        self._handshaking -= 1
        return True

    def _bury(self, dcid: bytes, now: float) -> None:
        dead = self._dead
        if len(dead) >= MAX_DEAD_CIDS:
            for cid in [c for c, t in dead.items() if t <= now]:
                del dead[cid]
            if len(dead) >= MAX_DEAD_CIDS:
                dead.clear()
        dead[dcid] = now + DEAD_CID_TTL

    def accept(self, offer: Offer, now: float) -> QuicConnection:
        """Make the offer's connection and feed it what the client sent so far."""
        if not self._decide(offer):
            raise QuicError("offer already decided", error_code=QuicError.INTERNAL_ERROR)
        entry = self._server_connection(offer.addr, offer.dcid, offer.original_dcid, offer.retry_scid)
        entry.conn.receive_datagrams(offer.datagrams, offer.addr, now)
        offer.datagrams = []
        return entry.conn

    def refuse(self, offer: Offer, now: float, error_code: int = QuicError.CONNECTION_REFUSED) -> None:
        """Answer with a CONNECTION_CLOSE in an Initial, without any handshake."""
        if not self._decide(offer):
            return
        self._bury(offer.dcid, now)
        send, _ = initial_protection(offer.dcid, is_client=False)
        w = Writer(64)
        ConnectionClose(error_code).encode(w)
        body = w.getvalue()
        payload = body + bytes(max(0, 20 - len(body)))  # PADDING: room for the sample
        header = build_long_header(PACKET_INITIAL, offer.scid, self._fresh_cid(), 0, 1, len(payload))
        self._stateless.append((offer.addr, bytes(seal_packet(send.key, send.hp, header, payload, 0))))

    def ignore(self, offer: Offer, now: float) -> None:
        """Drop the offer without a word; the client's retransmissions are dropped too."""
        if self._decide(offer):
            self._bury(offer.dcid, now)

    def _on_unknown_short(self, data: bytes, addr: Address, now: float) -> None:
        """A short header for no connection of ours: perhaps a peer's stateless reset, else
        answer with ours so a peer that outlived our state stops (RFC 9000 §10.3)."""
        if stateless_reset_token(data) is not None:
            for entry in self._by_addr.get(addr, ()):
                conn = entry.conn
                conn.receive_datagram(data, addr, now)
                self._dirty[entry] = None
                if conn.is_closed:
                    return
        # A packet no larger than a reset might be one: never answer it, so two endpoints
        # that both lost state cannot ping-pong resets.
        size = len(data)
        if size <= STATELESS_RESET_MAX or size < 1 + self._cid_length + STATELESS_RESET_MIN:
            self.stats.dropped += 1
            return
        if not self._bucket.take(now):
            self.stats.stateless_limited += 1
            return
        dcid = data[1 : 1 + self._cid_length]
        reply = STATELESS_RESET_MIN + os.urandom(1)[0] % (STATELESS_RESET_MAX - STATELESS_RESET_MIN + 1)
        self._stateless.append((addr, build_stateless_reset(reset_token(self._reset_key, dcid), reply)))
        self.stats.resets_sent += 1

    # -- Retry tokens -------------------------------------------------------------------

    def _retry_token(self, addr: Address, original_dcid: bytes, retry_scid: bytes, now: float) -> bytes:
        """AEAD-sealed (issue time, original DCID), bound to the address and the Retry's SCID."""
        nonce = os.urandom(_NONCE)
        plain = _TOKEN_TIME.pack(now) + original_dcid
        return nonce + self._retry_aead.encrypt(nonce, plain, _token_aad(addr, retry_scid))

    def _check_retry_token(self, token: bytes, addr: Address, dcid: bytes, now: float) -> bytes | None:
        """The original DCID a valid, unexpired token of ours carries, else None."""
        if len(token) < _NONCE + _TOKEN_TIME.size + 8 + 16:
            return None
        try:
            plain = self._retry_aead.decrypt(token[:_NONCE], token[_NONCE:], _token_aad(addr, dcid))
        except InvalidTag:
            return None
        (issued,) = _TOKEN_TIME.unpack_from(plain)
        if not issued <= now <= issued + self.config.retry_token_lifetime:
            return None
        return plain[_TOKEN_TIME.size :]

    # -- routing ------------------------------------------------------------------------

    def _add(self, entry: _Entry) -> None:
        self._entries[entry.conn] = entry
        self._by_addr.setdefault(entry.addr, []).append(entry)
        if entry.initial_dcid:
            self._routes[entry.initial_dcid] = entry
        self._sync_routes(entry)
        self._dirty[entry] = None

    def _sync_routes(self, entry: _Entry) -> None:
        """Follow the connection's issued and retired IDs."""
        conn = entry.conn
        if conn.cids_changes == entry.cids_seen:
            return
        entry.cids_seen = conn.cids_changes
        cids = conn.host_cids
        routes = self._routes
        for cid in entry.cids:
            if cid not in cids and routes.get(cid) is entry:
                del routes[cid]
        for cid in cids:
            if cid not in routes:
                routes[cid] = entry
        entry.cids = cids

    def _remove(self, entry: _Entry) -> None:
        entry.removed = True
        routes = self._routes
        for cid in entry.cids:
            if routes.get(cid) is entry:
                del routes[cid]
        if entry.initial_dcid and routes.get(entry.initial_dcid) is entry:
            del routes[entry.initial_dcid]
        peers = self._by_addr.get(entry.addr)
        if peers is not None:
            peers.remove(entry)
            if not peers:
                del self._by_addr[entry.addr]
        if entry.handshaking:
            entry.handshaking = False
            self._handshaking -= 1
        del self._entries[entry.conn]

    # -- timers and sending -------------------------------------------------------------

    def wake(self, conn: QuicConnection) -> None:
        """The application changed ``conn`` (data queued, stream opened, close...)."""
        entry = self._entries.get(conn)
        if entry is not None:
            self._dirty[entry] = None

    def deadline(self) -> float | None:
        """When :meth:`handle_timeout` must run next, or None."""
        timers = self._timers
        while timers:
            at, _, entry = timers[0]
            if not entry.removed and entry.timer == at:
                return at
            heapq.heappop(timers)
        return None

    def handle_timeout(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, entry = heapq.heappop(timers)
            if entry.removed or entry.timer != at:
                continue
            entry.timer = None
            entry.conn.handle_timer(now)
            self._dirty[entry] = None

    def transmits(self, now: float) -> list[Transmit]:
        """Everything to send now, as GSO-ready runs; also updates routes and timers."""
        out: list[Transmit] = []
        for addr, data in self._stateless:
            out.append(Transmit(addr, len(data), [data]))
        self._stateless.clear()
        dirty = self._dirty
        touched = self._touched
        while dirty:
            entries = list(dirty)
            dirty.clear()
            for entry in entries:
                if entry.removed:
                    continue
                conn = entry.conn
                touched[conn] = None
                for addr, datagrams in conn.transmit(now):
                    sent = entry.sent
                    sent[0] += len(datagrams)
                    sent[1] += sum(map(len, datagrams))
                    _runs(addr, datagrams, out)
                if entry.handshaking and conn.handshake_complete:
                    entry.handshaking = False
                    self._handshaking -= 1
                    if entry.initial_dcid and self._routes.get(entry.initial_dcid) is entry:
                        del self._routes[entry.initial_dcid]
                        # A late copy of the client's first flight (a dial fans out over every
                        # path, the relay's copy can come last) must not start a second handshake.
                        self._bury(entry.initial_dcid, now)
                    entry.initial_dcid = b""
                if conn.is_closed:
                    self._remove(entry)
                    continue
                self._sync_routes(entry)
                if conn.peer_address != entry.addr:
                    self.readdress(conn, conn.peer_address)
                at = conn.get_timer()
                if at != entry.timer:
                    entry.timer = at
                    if at is not None:
                        self._timer_seq += 1
                        heapq.heappush(self._timers, (at, self._timer_seq, entry))
        if len(self._timers) > 2 * len(self._entries) + 64:
            self._compact_timers()
        return out

    def _compact_timers(self) -> None:
        """Drop superseded heap entries: a busy connection moves its deadline every pass."""
        live = [t for t in self._timers if not t[2].removed and t[2].timer == t[0]]
        heapq.heapify(live)
        self._timers = live

    def touched(self) -> list[QuicConnection]:
        """Connections handled since the last call: read their events."""
        out = list(self._touched)
        self._touched.clear()
        return out

    def poll(
        self, batch: Sequence[tuple[bytes, Address]], now: float
    ) -> tuple[list[Transmit], list[QuicConnection], float | None]:
        """One pass: a receive burst (may be empty), due timers, then what to send."""
        created = self.receive(batch, now) if batch else []
        self.handle_timeout(now)
        return self.transmits(now), created, self.deadline()


def _initial_is_valid(packet: Packet) -> bool:
    """Whether a client Initial decrypts under its DCID's keys and carries CRYPTO frames."""
    _, recv = initial_protection(packet.dcid, is_client=False)
    try:
        unprotect_headers([packet], recv.hp, -1)
        frames = decode_frames(open_packet(recv.key, packet), PACKET_INITIAL)
    except QuicError:
        return False
    return any(isinstance(f, Crypto) for f in frames)


def _token_aad(addr: Address, cid: bytes) -> bytes:
    return repr(addr).encode() + b"\x00" + cid


def _runs(addr: Address, datagrams: list[bytes], out: list[Transmit]) -> None:
    """Split datagrams into GSO runs: equal sizes, the last of a run may be shorter."""
    i = 0
    n = len(datagrams)
    while i < n:
        size = len(datagrams[i])
        run = [datagrams[i]]
        total = size
        i += 1
        while i < n and len(run) < GSO_MAX_SEGMENTS:
            length = len(datagrams[i])
            if length > size or total + length > GSO_MAX_BYTES:
                break
            run.append(datagrams[i])
            total += length
            i += 1
            if length < size:
                break
        out.append(Transmit(addr, size, run))
