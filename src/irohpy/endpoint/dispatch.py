"""The QUIC dispatcher: drives every aioquic connection of one endpoint.

It routes incoming datagrams to connections by destination connection ID,
turns unknown Initials into :class:`Incoming` offers, runs one timer heap for
all connections, and flushes outgoing datagrams once per burst rather than
once per packet. It is the only place that calls aioquic's I/O methods.

An unknown Initial becomes an offer only once it decrypts (``initial.py``),
and only while fewer than ``HandshakeLimits.max_handshakes`` handshakes are
under way; above ``retry_above`` a dialer must first prove its address with a
stateless Retry. Junk and floods therefore cost no connection state.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aioquic.quic import events
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_version_negotiation,
)
from aioquic.quic.packet_builder import QuicPacketBuilder

from irohpy.endpoint.connection import Connection
from irohpy.endpoint.initial import InitialPacket, RetryTokens, open_initial, retry_packet
from irohpy.errors import QuicPacketError
from irohpy.socket.paths import PathKey, RelayPath
from irohpy.socket.remote_map import RemoteMap, RemoteState
from irohpy.socket.transport import Transport

if TYPE_CHECKING:
    from irohpy.endpoint.endpoint import Incoming

log = logging.getLogger(__name__)

CID_LENGTH = 8
MIN_INITIAL_SIZE = 1200
KEEP_ALIVE = 5.0
# Datagrams kept for an Incoming that the application has not decided on.
INCOMING_BUFFER = 8
# How long a refused or ignored handshake's CID stays known, so its
# retransmissions do not come back as new offers.
DEAD_CID_TTL = 10.0
MAX_DEAD_CIDS = 4096

INVALID_TOKEN = 0x0B
MAX_HANDSHAKES = 128
RETRY_ABOVE = 32


@dataclass(frozen=True)
class HandshakeLimits:
    """How many incoming handshakes may run at once, and when dialers must pass a Retry first.

    ``max_handshakes`` counts offers not yet decided plus accepted connections
    whose handshake has not completed; Initials beyond it are dropped. Above
    ``retry_above`` (or always, with ``always_retry``) a new dialer gets a
    stateless Retry and is admitted once its second Initial returns the token.
    """

    max_handshakes: int = MAX_HANDSHAKES
    retry_above: int = RETRY_ABOVE
    always_retry: bool = False


@dataclass(frozen=True, slots=True)
class InitialOffer:
    """A decrypted Initial the endpoint may accept: the connection IDs aioquic needs.

    After a Retry, ``original_dcid`` is the DCID of the dialer's first Initial
    and ``retry_scid`` the one our Retry chose (= ``packet.dcid``).
    """

    packet: InitialPacket
    path: PathKey
    datagram: bytes
    original_dcid: bytes
    retry_scid: bytes | None

    @property
    def validated(self) -> bool:
        return self.retry_scid is not None


IncomingFactory = Callable[[InitialOffer], "Incoming | None"]


def path_bytes(path: PathKey) -> bytes:
    """A path as bytes for binding Retry tokens: the IP and port, or the relay and the sender's id."""
    if isinstance(path, RelayPath):
        return b"relay|" + str(path.url).encode() + b"|" + bytes(path.endpoint_id)
    return f"{path[0]}|{path[1]}".encode()


def refuse_packet(version: int, client_dcid: bytes, client_scid: bytes, error_code: int) -> bytes:
    """A server Initial carrying only CONNECTION_CLOSE: refuse without a handshake."""
    crypto = CryptoPair()
    crypto.setup_initial(cid=client_dcid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=os.urandom(CID_LENGTH),
        peer_cid=client_scid,
        version=version,
        is_client=False,
        max_datagram_size=MIN_INITIAL_SIZE,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=16)
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(0)
    datagrams, _ = builder.flush()
    return datagrams[0]


@dataclass(slots=True)
class _SelectedBurst:
    """One connection's packets on its selected path within a receive burst.

    Liveness and byte counts are settled once per burst, not per packet: the
    path is heard only if some packet in the burst authenticated.
    """

    remote: RemoteState
    path: PathKey
    mark: int
    nbytes: int = 0


class Dispatcher:
    def __init__(self, transport: Transport, remotes: RemoteMap, supported_versions: list[int],
                 keep_alive: float = KEEP_ALIVE, limits: HandshakeLimits = HandshakeLimits()) -> None:
        self._loop = asyncio.get_running_loop()
        self.keep_alive = keep_alive
        self.limits = limits
        self._tokens = RetryTokens()
        # Accepted server connections whose handshake has not completed.
        self._handshaking: set[Connection] = set()
        self.rejected_initials = 0
        self.retries_sent = 0
        self.handshakes_dropped = 0
        self.transport = transport
        self.remotes = remotes
        self._versions = supported_versions
        self._cids: dict[bytes, Connection] = {}
        self._conn_cids: dict[Connection, set[bytes]] = {}
        self.connections: set[Connection] = set()
        self._pending: dict[bytes, Incoming] = {}
        self._dead: dict[bytes, float] = {}
        self.incoming_factory: IncomingFactory | None = None
        self.handshake_listener: Callable[[Connection, events.HandshakeCompleted], None] | None = None
        self.closed_listener: Callable[[Connection], None] | None = None
        self._heap: list[tuple[float, int, Connection]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._dirty: set[Connection] = set()
        self._flush_scheduled = False
        self._ping_ids = itertools.count()
        self.dropped_datagrams = 0

    # -- registration ----------------------------------------------------------

    def register(self, conn: Connection, cids: list[bytes]) -> None:
        self.connections.add(conn)
        self._conn_cids[conn] = set()
        for cid in cids:
            self.add_cid(cid, conn)

    def add_cid(self, cid: bytes, conn: Connection) -> None:
        if conn in self._conn_cids:
            self._cids[cid] = conn
            self._conn_cids[conn].add(cid)

    def remove_cid(self, cid: bytes) -> None:
        conn = self._cids.pop(cid, None)
        if conn is not None:
            self._conn_cids[conn].discard(cid)

    def begin_handshake(self, conn: Connection) -> None:
        """An accepted connection counts against ``max_handshakes`` until it completes or ends."""
        self._handshaking.add(conn)

    @property
    def handshakes(self) -> int:
        return len(self._pending) + len(self._handshaking)

    def remove(self, conn: Connection) -> None:
        """Forget a connection whose draining period ended."""
        self._handshaking.discard(conn)
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        for cid in self._conn_cids.pop(conn, ()):
            if self._cids.get(cid) is conn:
                del self._cids[cid]
        self._dirty.discard(conn)
        self.remotes.release(conn._mapped)
        if self.closed_listener is not None:
            self.closed_listener(conn)

    def forget_pending(self, dcid: bytes, dead: bool) -> None:
        self._pending.pop(dcid, None)
        if dead:
            if len(self._dead) >= MAX_DEAD_CIDS:
                self._expire_dead(self._loop.time(), force=True)
            self._dead[dcid] = self._loop.time() + DEAD_CID_TTL

    def _expire_dead(self, now: float, force: bool = False) -> None:
        for cid in [c for c, t in self._dead.items() if t <= now]:
            del self._dead[cid]
        if force and len(self._dead) >= MAX_DEAD_CIDS:
            self._dead.clear()

    # -- receive ---------------------------------------------------------------

    def on_packets(self, batch: list[tuple[bytes, PathKey]]) -> None:
        now = self._loop.time()
        cids = self._cids
        by_mapped = self.remotes.by_mapped
        touched: dict[Connection, None] = {}
        # Liveness of each selected path, checked once per burst: only
        # packets that authenticate keep a path alive.
        selected: dict[Connection, _SelectedBurst] = {}
        for data, path in batch:
            first = data[0]
            if first & 0x80:
                if len(data) < 7 or data[5] > 20 or len(data) < 6 + data[5]:
                    self.dropped_datagrams += 1
                    continue
                dcid = data[6 : 6 + data[5]]
            else:
                dcid = data[1 : 1 + CID_LENGTH]
            conn = cids.get(dcid)
            if conn is None:
                if first & 0x80:
                    self._on_unknown_long(data, path, dcid, now)
                else:
                    self.dropped_datagrams += 1
                continue
            pinned = conn._pinned
            if pinned is not None and path != pinned:
                # A dialer that fans its Initial out to every address it
                # knows must see us answer on one path only.
                continue
            quic = conn._quic
            remote = by_mapped.get(conn._mapped)
            if remote is not None and path == remote.paths.selected:
                burst = selected.get(conn)
                if burst is None:
                    burst = selected[conn] = _SelectedBurst(remote, path, quic.auth_mark())
                burst.nbytes += len(data)
                quic.receive_datagram(data, conn._mapped, now)
            else:
                mark = quic.auth_mark()
                quic.receive_datagram(data, conn._mapped, now)
                if remote is not None and quic.auth_mark() != mark:
                    remote.paths.on_authenticated(path, now)
            conn.rx_datagrams += 1
            conn.rx_bytes += len(data)
            touched[conn] = None
        for conn, burst in selected.items():
            burst.remote.paths.received(burst.path, burst.nbytes)
            if conn._quic.auth_mark() != burst.mark:
                burst.remote.paths.heard(burst.path, now)
        for conn in touched:
            conn._handle_events()
            self._flush(conn, now)

    def _on_unknown_long(self, data: bytes, path: PathKey, dcid: bytes, now: float) -> None:
        incoming = self._pending.get(dcid)
        if incoming is not None:
            incoming._buffer_datagram(data, path)
            return
        if dcid in self._dead:
            if self._dead[dcid] > now:
                return
            del self._dead[dcid]
        version = int.from_bytes(data[1:5], "big")
        if version == 0:
            return
        scid_at = 6 + data[5]
        if scid_at >= len(data) or data[scid_at] > 20 or len(data) < scid_at + 1 + data[scid_at]:
            return
        scid = data[scid_at + 1 : scid_at + 1 + data[scid_at]]
        if len(data) < MIN_INITIAL_SIZE:
            return
        if version not in self._versions:
            self.transport.send_path(
                path,
                encode_quic_version_negotiation(
                    source_cid=dcid, destination_cid=scid, supported_versions=self._versions
                ),
            )
            return
        if len(dcid) < 8 or self.incoming_factory is None:
            return
        try:
            packet = open_initial(data)
        except QuicPacketError:
            self.rejected_initials += 1
            return
        offer = self._admit(packet, path, data, now)
        if offer is None:
            return
        incoming = self.incoming_factory(offer)
        if incoming is not None:
            self._pending[dcid] = incoming

    def _admit(self, packet: InitialPacket, path: PathKey, data: bytes, now: float) -> InitialOffer | None:
        """Apply the handshake limits to a decrypted Initial: an offer, or a Retry, or nothing."""
        limits = self.limits
        load = self.handshakes
        if load >= limits.max_handshakes:
            self.handshakes_dropped += 1
            return None
        address = path_bytes(path)
        if packet.token:
            try:
                original = self._tokens.validate(packet.token, address, packet.dcid, now)
            except QuicPacketError:
                self.transport.send_path(path, refuse_packet(packet.version, packet.dcid, packet.scid, INVALID_TOKEN))
                return None
            if original is not None:
                return InitialOffer(packet, path, data, original, packet.dcid)
        if limits.always_retry or load >= limits.retry_above:
            retry_scid = os.urandom(CID_LENGTH)
            token = self._tokens.issue(address, packet.dcid, retry_scid, now)
            self.transport.send_path(path, retry_packet(packet.version, packet.scid, retry_scid, packet.dcid, token))
            self.retries_sent += 1
            return None
        return InitialOffer(packet, path, data, packet.dcid, None)

    def refuse(self, version: int, dcid: bytes, scid: bytes, path: PathKey) -> None:
        self.transport.send_path(
            path, refuse_packet(version, dcid, scid, QuicErrorCode.CONNECTION_REFUSED)
        )

    def feed(self, conn: Connection, datagrams: list[tuple[bytes, PathKey]]) -> None:
        """Hand datagrams buffered before the connection existed to it."""
        now = self._loop.time()
        for data, path in datagrams:
            conn._quic.receive_datagram(data, conn._mapped, now)
            conn.rx_datagrams += 1
            conn.rx_bytes += len(data)
        conn._handle_events()
        self._flush(conn, now)

    def on_handshake(self, conn: Connection, event: events.HandshakeCompleted) -> None:
        self._handshaking.discard(conn)
        conn._pinned = None
        conn._keepalive_at = self._loop.time() + self.keep_alive
        if self.handshake_listener is not None:
            self.handshake_listener(conn, event)

    # -- send ------------------------------------------------------------------

    def wake(self, conn: Connection) -> None:
        """An application call changed ``conn``; flush soon, once per loop turn."""
        self._dirty.add(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_dirty)

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        now = self._loop.time()
        for conn in dirty:
            if conn in self.connections:
                self._flush(conn, now)
                conn._handle_events()

    def _flush(self, conn: Connection, now: float) -> None:
        """Everything the connection has to send, to the transport in one batch."""
        items = conn._quic.datagrams_to_send(now)
        if items:
            # aioquic only ever knows the peer by its mapped address.
            datagrams = [data for data, _ in items]
            self.transport.send(conn._mapped, datagrams)
            conn.tx_datagrams += len(datagrams)
            conn.tx_bytes += sum(map(len, datagrams))
            if conn._keepalive_at is not None:
                conn._keepalive_at = now + self.keep_alive
        self._schedule(conn)

    # -- timers ----------------------------------------------------------------

    def _schedule(self, conn: Connection) -> None:
        when = conn._quic.get_timer()
        keepalive = conn._keepalive_at
        if keepalive is not None and not conn._terminated and (when is None or keepalive < when):
            when = keepalive
        if when is None:
            return
        current = conn._timer_at
        # An earlier entry already queued fires first and re-evaluates; only
        # an earlier deadline needs a new heap entry.
        if current is not None and current <= when:
            return
        conn._timer_at = when
        heapq.heappush(self._heap, (when, next(self._seq), conn))
        if self._timer_when is None or when < self._timer_when:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        now = self._loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, conn = heapq.heappop(heap)
            if conn._timer_at != when or conn not in self.connections:
                continue
            conn._timer_at = None
            if conn._keepalive_at is not None and conn._keepalive_at <= now and not conn._terminated:
                conn._quic.send_ping(next(self._ping_ids))
                conn._keepalive_at = now + self.keep_alive
            conn._quic.handle_timer(now)
            conn._handle_events()
            if conn in self.connections:
                self._flush(conn, now)
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        self._pending.clear()
