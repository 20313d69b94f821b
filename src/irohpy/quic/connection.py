"""The sans-IO QUIC connection: packets in, packets out, events, one timer (RFC 9000/9001/9002).

:class:`QuicConnection` ties the wire layer (packets, frames, protection, transport parameters)
to the transport-state cores (ACK tracking, recovery, CUBIC and pacing, streams) and to TLS
through :class:`~irohpy.quic.handshake.Handshake`. A driver does the I/O:

- ``receive_datagram(data, addr, now)`` for every datagram routed to the connection;
- ``datagrams_to_send(now)`` after every receive or timer, sending what it returns in order;
- ``get_timer()`` / ``handle_timer(now)`` for the single next deadline;
- ``next_event()`` until it returns None.

0-RTT (RFC 9001 §4.6): a client whose handshake resumes a session with early data sends
application data in 0-RTT packets at once, within the limits the server's transport parameters
had in that session; a server that accepts answers in 1-RTT packets before the handshake
completes (0.5-RTT), and its application sees 0-RTT stream data before ``HandshakeCompleted``.
When the server rejects 0-RTT, the client sends that data again in 1-RTT packets.

Multipath (draft-ietf-quic-multipath as noq implements it) is on when ``max_path_id`` is set
and the peer sent ``initial_max_path_id`` too. Each path (:class:`~irohpy.quic.path.PathState`)
then has its own packet numbers (its id goes into the nonce), recovery, congestion control,
PMTU, connection IDs, validation and keep-alive/idle timers. A driver with several paths uses
``receive_datagram(data, addr, now)`` as before (the DCID says which path a packet is on) and
``transmit(now)``, which tags each batch of datagrams with its path's address. The client
opens paths (``open_path``); validated available paths carry data, backup paths only while
no available one is validated; ``close_path`` abandons one and what was in flight on it goes
again on the others.

Nothing here reads a clock or touches a socket. Errors the peer causes close the connection
with a CONNECTION_CLOSE and a :class:`ConnectionTerminated` event; they are never raised to the
driver.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Union, cast

from irohpy.errors import (
    DatagramError,
    InvalidAddr,
    NatTraversalError,
    PathError,
    QuicDecodeError,
    QuicDecryptError,
    QuicError,
    StreamError,
)
from irohpy.quic.ack import AckTracker
from irohpy.quic.address_discovery import AddressDiscovery, ObservedAddressReceived
from irohpy.quic.buffer import Writer
from irohpy.quic.cids import LocalCids, PeerCids
from irohpy.quic.crypto import MASK_STRIDE, SAMPLE_SIZE, TAG_SIZE, OneRttKeys, Protection, initial_protection
from irohpy.quic.frames import (
    FRAME_ACK,
    FRAME_ACK_ECN,
    FRAME_CRYPTO,
    FRAME_DATAGRAM,
    FRAME_DATAGRAM_LEN,
    FRAME_HANDSHAKE_DONE,
    FRAME_NEW_TOKEN,
    FRAME_PATH_ACK,
    FRAME_PATH_ACK_ECN,
    FRAME_PATH_STATUS_AVAILABLE,
    FRAME_PATH_STATUS_BACKUP,
    FRAME_ADD_ADDRESS_V4,
    FRAME_ADD_ADDRESS_V6,
    FRAME_REACH_OUT_V4,
    FRAME_REACH_OUT_V6,
    FRAME_REMOVE_ADDRESS,
    Ack,
    AddAddress,
    ConnectionClose,
    Crypto,
    Datagram,
    DataBlocked,
    Frame,
    HandshakeDone,
    MaxData,
    MaxStreamData,
    MaxStreams,
    NewConnectionId,
    MaxPathId,
    NewToken,
    ObservedAddress,
    Padding,
    PathAbandon,
    PathChallenge,
    PathCidsBlocked,
    PathResponse,
    PathsBlocked,
    PathStatus,
    Ping,
    ReachOut,
    RemoveAddress,
    ResetStream,
    RetireConnectionId,
    StopSending,
    Stream,
    StreamDataBlocked,
    StreamsBlocked,
    decode_frame,
    decode_frames,
    pull_ack_frame,
    pull_stream_frame,
    push_ack,
    push_stream_header,
    stream_header_size,
)
from irohpy.quic.handshake import EPOCH_HANDSHAKE, EPOCH_INITIAL, EPOCH_ONE_RTT, EPOCH_ZERO_RTT, Handshake
from irohpy.quic.packet import (
    MIN_INITIAL_DATAGRAM,
    PACKET_HANDSHAKE,
    PACKET_INITIAL,
    PACKET_ONE_RTT,
    PACKET_RETRY,
    PACKET_VERSION_NEGOTIATION,
    PACKET_ZERO_RTT,
    VERSION_1,
    Packet,
    build_short_header,
    open_one_rtt,
    open_packet,
    packet_number_length,
    seal_packet,
    split_datagram,
    unprotect_headers,
    verify_retry,
)
from irohpy.quic.nat_traversal import IpPort, NatFrame, NatTraversal, canonical, negotiated
from irohpy.quic.path import STATUS_AVAILABLE, STATUS_BACKUP, PathState
from irohpy.quic.pmtud import BASE_MTU
from irohpy.quic.recovery import (
    APPLICATION,
    HANDSHAKE,
    INITIAL,
    TIMEOUT_LOSS,
    TIMEOUT_PTO,
    Recovery,
    SentPacket,
)
from irohpy.quic.streams import SendCredit, SendStream, StreamMap
from irohpy.quic.transport_params import TransportParameters
from irohpy.quic.varint import VARINT_MAX, encode_varint

INF: Final = float("inf")

STATE_HANDSHAKE: Final = 0
STATE_ESTABLISHED: Final = 1
STATE_CLOSING: Final = 2
"""We sent CONNECTION_CLOSE; we answer the peer's packets with it until the period ends."""
STATE_DRAINING: Final = 3
"""The peer closed; we send nothing until the period ends."""
STATE_CLOSED: Final = 4

#: What became of 0-RTT on this connection.
EARLY_DATA_NONE: Final = 0
EARLY_DATA_ATTEMPTED: Final = 1
EARLY_DATA_ACCEPTED: Final = 2
EARLY_DATA_REJECTED: Final = 3

#: CRYPTO bytes buffered ahead of the handshake's read position (RFC 9000 §7.5).
MAX_CRYPTO_BUFFER: Final = 65536
MAX_CRYPTO_PIECES: Final = 64
#: ACK ranges written per ACK frame; older gaps are left out.
MAX_ACK_FRAME_RANGES: Final = 32
#: The largest ACK frame we write: type, path id, four varints, the other ranges, ECN counts.
_ACK_FRAME_MAX: Final = 1 + 8 + 4 * 8 + (MAX_ACK_FRAME_RANGES - 1) * 16 + 3 * 8
#: CONNECTION_CLOSE datagrams a closing connection sends in all, answering the peer's packets.
MAX_CLOSE_RESPONSES: Final = 16
#: Unsent datagrams kept; the oldest are dropped beyond it (datagrams are unreliable anyway).
MAX_QUEUED_DATAGRAMS: Final = 256
ACK_DELAY_EXPONENT: Final = 3
#: Room every control frame fits in (NEW_CONNECTION_ID is the largest, 54 bytes).
_CONTROL_ROOM: Final = 60

# What a sent packet carried, as (kind, a, b, c) integer records to act on when acked or lost.
K_ACK: Final = 0  # a = largest acknowledged
K_CRYPTO: Final = 1  # a = offset, b = length
K_STREAM: Final = 2  # a = stream id, b = offset, c = length * 2 + fin
K_RESET: Final = 3  # a = stream id
K_STOP: Final = 4  # a = stream id
K_MAX_DATA: Final = 5  # a = limit
K_MAX_STREAM_DATA: Final = 6  # a = stream id, b = limit
K_MAX_STREAMS: Final = 7  # a = 1 for uni, b = limit
K_NEW_CID: Final = 8  # a = sequence
K_RETIRE_CID: Final = 9  # a = sequence
K_HANDSHAKE_DONE: Final = 10
K_OTHER: Final = 11  # PING, DATAGRAM, PATH_RESPONSE, *_BLOCKED: never repaired
K_MTU_PROBE: Final = 12  # a = probe size
K_OBSERVED_ADDRESS: Final = 13
K_PATH_ABANDON: Final = 14  # a = path id, b = error code
K_PATH_STATUS: Final = 15  # a = path id, b = status sequence number
K_MAX_PATH_ID: Final = 16  # a = the limit
K_NAT: Final = 17  # a = key of the NAT-traversal frame in QuicConnection._nat_sent
# K_ACK, K_NEW_CID and K_RETIRE_CID carry the path id in b.

#: PATH_ABANDON error codes (draft-ietf-quic-multipath §10.2, as noq names them).
APPLICATION_ABANDON_PATH: Final = 0x3E
PATH_UNSTABLE_OR_POOR: Final = 0x3E76
#: The idle timeout iroh gives relay paths (RELAY_PATH_MAX_IDLE_TIMEOUT).
RELAY_PATH_IDLE_TIMEOUT: Final = 30.0
#: PATH_CHALLENGE retransmissions back off from the path's PTO base (without the peer's ack
#: delay: a PATH_RESPONSE is never delayed, as noq's ``on_path_challenge_pto``) up to this.
MAX_CHALLENGE_INTERVAL: Final = 2.0
#: PATH_CHALLENGE data we keep per path, any of which a PATH_RESPONSE may echo.
MAX_CHALLENGES: Final = 4
#: PATH_CHALLENGEs received per path and burst that we answer.
MAX_RESPONSES: Final = 8
#: Room an ADD_ADDRESS, REMOVE_ADDRESS or REACH_OUT always fits in (the largest is 30 bytes).
_NAT_FRAME_ROOM: Final = 32

SentFrames = list[tuple[int, int, int, int]]

_SPACE_OF_PACKET: Final = {PACKET_INITIAL: INITIAL, PACKET_HANDSHAKE: HANDSHAKE, PACKET_ONE_RTT: APPLICATION}
_EPOCH_OF_SPACE: Final = (EPOCH_INITIAL, EPOCH_HANDSHAKE, EPOCH_ONE_RTT)


@dataclass(slots=True)
class QuicConfig:
    """One side's transport settings; the defaults follow what iroh configures."""

    is_client: bool
    idle_timeout: float = 30.0
    #: Send a PING after this long without sending anything ack-eliciting (0: never).
    keep_alive: float = 0.0
    #: The largest UDP payload we send or take. Paths start at 1200 bytes and PMTU discovery
    #: probes up to this (and the peer's max_udp_payload_size); 1200 turns discovery off.
    max_datagram_size: int = 1452
    #: RFC 9221 DATAGRAM frames accepted up to this size (0: not offered).
    max_datagram_frame_size: int = 65535
    max_streams_bidi: int = 100
    max_streams_uni: int = 100
    stream_window: int = 1_250_000
    stream_max_window: int = 16 << 20
    conn_window: int = 4 << 20
    conn_max_window: int = 64 << 20
    #: Flow-control credit returns when the driver reports the application's reads
    #: (:meth:`QuicConnection.consume`), not when data is handed over in events: an
    #: application that never reads then holds at most the receive windows.
    read_credit: bool = False
    cid_length: int = 8
    active_connection_id_limit: int = 5
    max_ack_delay: float = 0.025
    initial_rtt: float = 0.333
    #: Multipath: the highest path id the peer may open (TP initial_max_path_id; iroh sends 7).
    #: None keeps the connection single-path.
    max_path_id: int | None = None
    #: Per-path keep-alive and idle timeout once multipath is on (iroh: 5 s and 15 s; its relay
    #: paths get 30 s through :meth:`QuicConnection.set_path_idle_timeout`).
    path_keep_alive: float = 5.0
    path_idle_timeout: float = 15.0
    #: QUIC Address Discovery role (``irohpy.quic.transport_params.ROLE_*``); None: no QAD.
    observed_address_role: int | None = None
    #: n0 NAT traversal: how many candidate addresses we take from the peer (TP
    #: 0x3d7f91120401; iroh sends 32). On only with multipath too; None: not offered.
    nat_traversal_addresses: int | None = None


# -- events ---------------------------------------------------------------------------


@dataclass(slots=True)
class HandshakeCompleted:
    alpn: bytes | None
    peer_id: bytes | None
    #: The server accepted 0-RTT: the client's early data counts (a client only attempts it
    #: when resuming).
    early_data_accepted: bool = False
    #: The session resumed an earlier one by its ticket.
    session_resumed: bool = False


@dataclass(slots=True)
class StreamDataReceived:
    stream_id: int
    data: bytes
    fin: bool


@dataclass(slots=True)
class StreamReset:
    """The peer abandoned sending on the stream (RESET_STREAM)."""

    stream_id: int
    error_code: int


@dataclass(slots=True)
class StopSendingReceived:
    """The peer will not read the stream; we reset our side with its code."""

    stream_id: int
    error_code: int


@dataclass(slots=True)
class DatagramReceived:
    data: bytes


@dataclass(slots=True)
class ConnectionIdIssued:
    """A new connection ID of ours the peer may use: route datagrams for it here."""

    cid: bytes


@dataclass(slots=True)
class ConnectionIdRetired:
    cid: bytes


@dataclass(slots=True)
class PathEstablished:
    """Path ``path_id`` is validated (our PATH_CHALLENGE came back on it): it may carry data."""

    path_id: int


@dataclass(slots=True)
class PathAbandoned:
    """Path ``path_id`` is gone: abandoned by us (``remote`` False) or the peer, or timed out
    (``error_code`` PATH_UNSTABLE_OR_POOR). ``validated`` False means it never validated: the
    open failed."""

    path_id: int
    error_code: int
    remote: bool
    validated: bool


Address = object
"""A remote address as the driver names it (e.g. ``(host, port)``); compared and used as a dict
key only."""


@dataclass(slots=True)
class RemoteCandidatesChanged:
    """Client, NAT traversal: the server's candidate addresses are now ``addresses`` (a reason
    to run a round)."""

    addresses: list[IpPort]


@dataclass(slots=True)
class TraversalPathOpened:
    """Client, NAT traversal: a probe to ``addr`` came back, so path ``path_id`` (backup) was
    opened there; :class:`PathEstablished` follows once it validates."""

    path_id: int
    addr: IpPort


@dataclass(slots=True)
class PathStatusReceived:
    """The peer marked path ``path_id`` available (``available``) or backup."""

    path_id: int
    available: bool


CAUSE_LOCAL: Final = "local"
CAUSE_PEER: Final = "peer"
CAUSE_IDLE: Final = "idle"
CAUSE_RESET: Final = "stateless-reset"


@dataclass(slots=True)
class ConnectionTerminated:
    """The connection ended: ``cause`` is local, peer, idle or stateless-reset."""

    error_code: int
    reason: bytes
    frame_type: int
    application: bool
    cause: str


Event = Union[
    HandshakeCompleted,
    StreamDataReceived,
    StreamReset,
    StopSendingReceived,
    DatagramReceived,
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    PathEstablished,
    PathAbandoned,
    PathStatusReceived,
    RemoteCandidatesChanged,
    TraversalPathOpened,
    ObservedAddressReceived,
]


# -- per packet-number space --------------------------------------------------------------


class CryptoReceiver:
    """Reassembles one epoch's CRYPTO stream; out-of-order data is bounded."""

    __slots__ = ("offset", "pieces")

    def __init__(self) -> None:
        self.offset = 0
        self.pieces: dict[int, bytes] = {}

    def on_frame(self, offset: int, data: bytes) -> bytes:
        """Bytes that became contiguous; CRYPTO_BUFFER_EXCEEDED past the bound."""
        end = offset + len(data)
        if end <= self.offset:
            return b""
        if end - self.offset > MAX_CRYPTO_BUFFER:
            raise QuicError(
                "CRYPTO data too far ahead", error_code=QuicError.CRYPTO_BUFFER_EXCEEDED, frame_type=FRAME_CRYPTO
            )
        pieces = self.pieces
        if offset > self.offset:
            known = pieces.get(offset)
            if known is None and len(pieces) >= MAX_CRYPTO_PIECES:
                raise QuicError(
                    "CRYPTO data too fragmented", error_code=QuicError.CRYPTO_BUFFER_EXCEEDED, frame_type=FRAME_CRYPTO
                )
            if known is None or len(known) < len(data):
                pieces[offset] = data
            return b""
        out = [data[self.offset - offset :]]
        self.offset = end
        progress = True
        while progress and pieces:
            progress = False
            for start in list(pieces):
                if start <= self.offset:
                    piece = pieces.pop(start)
                    stop = start + len(piece)
                    if stop > self.offset:
                        out.append(piece[self.offset - start :])
                        self.offset = stop
                    progress = True
        return b"".join(out)


class PacketSpace:
    """Keys, received packet numbers and the CRYPTO streams of one packet-number space.

    Application data's received packet numbers live per path (:class:`PathState`), so that
    space's ``ack`` stays empty."""

    __slots__ = ("send", "recv", "ack", "ack_dirty", "crypto_send", "crypto_credit", "crypto_recv", "discarded")

    def __init__(self, max_ack_delay: float) -> None:
        self.send: Protection | None = None
        self.recv: Protection | None = None
        self.ack = AckTracker(max_ack_delay)
        #: Packets arrived since the last ACK we sent: worth piggybacking an ACK.
        self.ack_dirty = False
        self.crypto_send = SendStream(0, VARINT_MAX)
        self.crypto_credit = SendCredit(VARINT_MAX)
        self.crypto_recv = CryptoReceiver()
        self.discarded = False


class _Plan:
    """One packet of the datagram being assembled, before protection."""

    __slots__ = ("space", "pn", "pn_length", "payload", "frames", "eliciting", "mtu_probe")

    def __init__(
        self,
        space: int,
        pn: int,
        pn_length: int,
        payload: bytearray,
        frames: SentFrames,
        eliciting: bool,
        mtu_probe: bool = False,
    ) -> None:
        self.mtu_probe = mtu_probe
        self.space = space
        self.pn = pn
        self.pn_length = pn_length
        self.payload = payload
        self.frames = frames
        self.eliciting = eliciting


def _repairable(kind: int) -> bool:
    """Whether a sent frame of this kind goes again when lost (PINGs, ACKs, probes do not)."""
    return kind != K_ACK and kind != K_OTHER and kind != K_MTU_PROBE


def _carries_repairable(frames: SentFrames) -> bool:
    for frame in frames:
        if _repairable(frame[0]):
            return True
    return False


class QuicConnection:
    """One QUIC connection, client or server; see the module docstring for the driver loop."""

    __slots__ = (
        "config",
        "is_client",
        "_handshake",
        "_local_cids",
        "_peer_cids",
        "_original_dcid",
        "_initial_dcid",
        "_retry_scid",
        "_token",
        "_discard_prev_at",
        "_peer_scid",
        "_peer_scid_known",
        "_spaces",
        "_one_rtt",
        "_one_rtt_secrets",
        "_path",
        "_rec",
        "_pacer",
        "_streams",
        "_events",
        "_state",
        "_initialized",
        "_handshake_complete",
        "_confirmed",
        "_peer_params",
        "_idle_timeout",
        "_last_activity",
        "_last_eliciting_sent",
        "_last_eliciting_received",
        "_close",
        "_close_pending",
        "_close_responses",
        "_close_deadline",
        "_pacing_at",
        "_cwnd_limited",
        "_send_queue",
        "_conn_blocked",
        "_recv_dirty",
        "_fin_delivered",
        "_pending_max_data",
        "_pending_msd",
        "_pending_max_streams",
        "_pending_streams_blocked",
        "_pending_new_cids",
        "_pending_retire",
        "_pending_handshake_done",
        "_ping_pending",
        "_datagrams",
        "_peer_max_datagram_frame",
        "_peer_ack_delay_exponent",
        "_peer_cid_limit",
        "_pmtud",
        "_key_phase_first_pn",
        "_key_update_allowed",
        "_idle_restarted",
        "_zero_rtt",
        "_half_rtt",
        "_zero_rtt_pns",
        "_early_data",
        "_qad",
        "_remembered",
        "_send_writer",
        "_hp_samples",
        "_hp_pending",
        "lost_packets",
        "lost_bytes",
        "paths_blocked_received",
        "path_cids_blocked_received",
        "_paths",
        "_home",
        "_cur_peer",
        "_local_path_cids",
        "cids_changes",
        "_peer_path_cids",
        "_reset_key",
        "_mp",
        "_local_max_path_id",
        "_remote_max_path_id",
        "_max_path_id_with_cids",
        "_abandoned_ids",
        "_pending_max_path_id",
        "_pending_paths_blocked",
        "_pending_path_cids_blocked",
        "_pending_abandons",
        "_data_ok",
        "_rx_addr",
        "_addr_settled",
        "_rx_probing",
        "_rx_ping",
        "_burst_over",
        "_no_path_at",
        "_nat",
        "_nat_local",
        "_nat_sent",
        "_nat_next_key",
        "_nat_open_due",
    )

    def __init__(
        self,
        config: QuicConfig,
        handshake: Handshake,
        *,
        cid: bytes | None = None,
        original_dcid: bytes | None = None,
        retry_scid: bytes | None = None,
        reset_key: bytes | None = None,
    ) -> None:
        """``original_dcid`` and ``retry_scid``: a server whose endpoint sent a Retry and
        validated its token passes the client's first DCID and the Retry's SCID.
        ``reset_key``: the endpoint's static key its stateless reset tokens derive from."""
        self.config = config
        self.is_client = config.is_client
        self._handshake = handshake
        host = cid if cid is not None else os.urandom(config.cid_length)
        if len(host) != config.cid_length:
            raise QuicError("connection ID length differs from the configuration", error_code=QuicError.INTERNAL_ERROR)
        self._local_cids = LocalCids(host, reset_key)
        self._peer_cids = PeerCids(b"", config.active_connection_id_limit)
        if config.is_client and (original_dcid is not None or retry_scid is not None):
            raise QuicError("only a server is told about a Retry", error_code=QuicError.INTERNAL_ERROR)
        self._original_dcid = original_dcid if original_dcid is not None else b""
        #: The DCID of the client's Initials, from which Initial keys come.
        self._initial_dcid = b""
        self._retry_scid = retry_scid
        #: The Retry token a client echoes in its Initials.
        self._token = b""
        self._discard_prev_at = INF
        self._peer_scid = b""
        self._peer_scid_known = False
        self._spaces = [PacketSpace(0.0), PacketSpace(0.0), PacketSpace(config.max_ack_delay)]
        self._one_rtt: OneRttKeys | None = None
        self._one_rtt_secrets: dict[bool, tuple[int, bytes]] = {}
        if config.max_datagram_size < BASE_MTU:
            raise QuicError("max_datagram_size below QUIC's 1200 bytes", error_code=QuicError.INTERNAL_ERROR)
        path = PathState(
            0,
            None,
            is_server=not config.is_client,
            initial_rtt=config.initial_rtt,
            max_ack_delay=config.max_ack_delay,
            max_datagram_size=config.max_datagram_size,
        )
        # The path being received or sent on (the home path between calls); the three fields
        # below are its parts.
        self._path = path
        self._pmtud = path.pmtud
        self._rec = path.recovery
        if retry_scid is not None:
            # The Retry token the endpoint checked proved the client's address (RFC 9000 §8.1.2).
            path.recovery.address_validated = True
        self._pacer = path.pacer
        #: The 1-RTT send path's reused frame buffer (made on first use), and the packets of
        #: the current burst waiting for header protection, with their samples.
        self._send_writer: Writer | None = None
        self._hp_samples: list[bytes] = []
        self._hp_pending: list[tuple[bytearray, int, int]] = []
        self._streams = StreamMap(
            is_server=not config.is_client,
            max_bidi=config.max_streams_bidi,
            max_uni=config.max_streams_uni,
            stream_window=config.stream_window,
            stream_max_window=config.stream_max_window,
            conn_window=config.conn_window,
            conn_max_window=config.conn_max_window,
        )
        self._events: deque[Event] = deque()
        self._state = STATE_HANDSHAKE
        self._initialized = False
        self._handshake_complete = False
        self._confirmed = False
        self._peer_params: TransportParameters | None = None
        self._idle_timeout = config.idle_timeout
        self._last_activity = 0.0
        self._last_eliciting_sent = 0.0
        #: Keep-alive counts this too: our ACK of it keeps the peer's idle timer (and the
        #: path) alive, so of two peers with keep-alive only the first to ping keeps pinging.
        self._last_eliciting_received = 0.0
        self._close: tuple[int, bytes, int, bool] = (0, b"", 0, False)
        self._close_pending = False
        self._close_responses = 0
        self._close_deadline = INF
        self._pacing_at = INF
        self._cwnd_limited = False
        self._send_queue: dict[int, None] = {}
        self._conn_blocked: dict[int, None] = {}
        self._recv_dirty: dict[int, None] = {}
        self._fin_delivered: set[int] = set()
        self._pending_max_data = False
        self._pending_msd: dict[int, None] = {}
        self._pending_max_streams = [False, False]
        self._pending_streams_blocked = [-1, -1]
        #: (path id, sequence) of our IDs to announce and the peer's to retire.
        self._pending_new_cids: list[tuple[int, int]] = []
        self._pending_retire: list[tuple[int, int]] = []
        self._pending_handshake_done = False
        self._ping_pending = False
        self._datagrams: deque[bytes] = deque()
        self._peer_max_datagram_frame = 0
        self._peer_ack_delay_exponent = 3
        self._peer_cid_limit = 2
        self._key_phase_first_pn = 0
        self._key_update_allowed = False
        #: An ack-eliciting packet went out since the last packet we processed (RFC 9000 §10.1).
        self._idle_restarted = False
        #: 0-RTT protection: a client's send side, a server's receive side.
        self._zero_rtt: Protection | None = None
        #: A server's 1-RTT send protection before the handshake completes (0.5-RTT).
        self._half_rtt: Protection | None = None
        #: Packet numbers a client sent in 0-RTT packets, to send again if 0-RTT is rejected.
        self._zero_rtt_pns: list[int] = []
        self._early_data = EARLY_DATA_NONE
        self._qad = AddressDiscovery(config.observed_address_role)
        #: The server transport parameters a client's 0-RTT attempt runs under (RFC 9000 §7.4.1).
        self._remembered: TransportParameters | None = None
        #: Packets (and their bytes) declared lost, for the application's stats.
        self.lost_packets = 0
        self.lost_bytes = 0
        #: The peer's PATHS_BLOCKED and PATH_CIDS_BLOCKED frames (it wants more paths or IDs;
        #: we already issue all the limits allow, so they are only counted, as noq does).
        self.paths_blocked_received = 0
        self.path_cids_blocked_received = 0
        #: Paths by id. The home path is the one ``peer_address`` names: path 0 until abandoned.
        self._paths: dict[int, PathState] = {0: path}
        self._home = path
        self._cur_peer = self._peer_cids
        #: Connection IDs by path, ours and the peer's; path 0's are the handshake's.
        self._local_path_cids: dict[int, LocalCids] = {0: self._local_cids}
        #: Bumped whenever :attr:`host_cids` changes, so a driver re-reads them only then.
        self.cids_changes = 0
        self._peer_path_cids: dict[int, PeerCids] = {0: self._peer_cids}
        self._reset_key = reset_key
        #: Multipath negotiated (both sent initial_max_path_id; set when the handshake completes).
        self._mp = False
        self._local_max_path_id = 0
        self._remote_max_path_id = 0
        self._max_path_id_with_cids = 0
        self._abandoned_ids: set[int] = set()
        self._pending_max_path_id = False
        self._pending_paths_blocked = -1
        self._pending_path_cids_blocked: dict[int, int] = {}
        #: PATH_ABANDONs to send, path id -> error code; kept apart from the path's state, which
        #: drains after 3 PTO of its own, maybe before a lost PATH_ABANDON shows on another path.
        self._pending_abandons: dict[int, int] = {}
        #: The path being sent on may carry data (set per path in :meth:`transmit`).
        self._data_ok = True
        #: The address of the datagram being processed.
        self._rx_addr: object = None
        #: Client: whether the home path took the address the server's first answer came from.
        self._addr_settled = False
        #: Whether the 1-RTT packet being processed held only probing frames (RFC 9000 §9.1).
        self._rx_probing = True
        #: Whether the packet being processed held a PING: a keep-alive or a probe, whose
        #: sender waits for our ACK, so it goes out in this pass, not after max_ack_delay
        #: (an idle server then wakes once per keep-alive, not twice).
        self._rx_ping = False
        #: The burst being built ended with a lone ACK packet (see _build_short).
        self._burst_over = False
        #: The peer abandoned our last path: without a new one by then, the connection ends.
        self._no_path_at = INF
        #: n0 NAT traversal (negotiated with the handshake); it owns the probe tokens.
        self._nat: NatTraversal | None = None
        #: Our candidates as last set, for a traversal not negotiated yet.
        self._nat_local: list[IpPort] = []
        #: NAT-traversal frames in flight, by the key their sent-frame record carries.
        self._nat_sent: dict[int, NatFrame] = {}
        self._nat_next_key = 0
        #: Client: a probe came back or path limits or IDs grew: try the paths waiting to open.
        self._nat_open_due = False

    # -- introspection --------------------------------------------------------------

    @property
    def state(self) -> int:
        return self._state

    @property
    def is_closed(self) -> bool:
        """Closing or draining is over: the driver may forget the connection."""
        return self._state == STATE_CLOSED

    @property
    def handshake_complete(self) -> bool:
        return self._handshake_complete

    @property
    def host_cids(self) -> list[bytes]:
        """Our active connection IDs, every path's; datagrams addressed to any belong here."""
        if len(self._local_path_cids) == 1:
            return self._local_cids.cids()
        out: list[bytes] = []
        for cids in self._local_path_cids.values():
            out.extend(cids.cids())
        return out

    @property
    def peer_address(self) -> object:
        """The home path's address: the one given to ``connect`` or the first Initial came from."""
        return self._home.addr

    @property
    def original_dcid(self) -> bytes:
        return self._original_dcid

    @property
    def key_phase(self) -> int:
        keys = self._one_rtt
        return keys.key_phase if keys is not None else 0

    @property
    def path(self) -> PathState:
        """The home path: its RTT, congestion window, MTU and address."""
        return self._home

    @property
    def recovery(self) -> Recovery:
        return self._home.recovery

    @property
    def multipath(self) -> bool:
        """Both sides offered multipath and the handshake completed."""
        return self._mp

    @property
    def paths(self) -> dict[int, PathState]:
        """Every path by id, abandoned ones until they drain (read only)."""
        return self._paths

    @property
    def streams(self) -> StreamMap:
        return self._streams

    @property
    def peer_transport_parameters(self) -> TransportParameters | None:
        return self._peer_params

    @property
    def early_data_accepted(self) -> bool:
        """The server accepted 0-RTT (a client knows once the handshake completed)."""
        return self._early_data == EARLY_DATA_ACCEPTED

    @property
    def early_data_state(self) -> int:
        """One of the ``EARLY_DATA_*`` values."""
        return self._early_data

    @property
    def session_resumed(self) -> bool:
        return self._handshake.session_resumed

    def next_event(self) -> Event | None:
        events = self._events
        return events.popleft() if events else None

    # -- setup ------------------------------------------------------------------------

    def connect(self, addr: object, now: float) -> None:
        """Start a client's handshake towards ``addr`` (kept only for the driver)."""
        if not self.is_client or self._initialized:
            raise QuicError("connect() is for a fresh client", error_code=QuicError.INTERNAL_ERROR)
        dcid = os.urandom(8)
        self._path.addr = addr
        self._original_dcid = dcid
        self._set_peer_cids(PeerCids(dcid, self.config.active_connection_id_limit))
        self._start(dcid, now)

    def _set_peer_cids(self, peer: PeerCids) -> None:
        self._peer_cids = peer
        self._peer_path_cids[0] = peer
        self._cur_peer = peer

    def _start(self, dcid: bytes, now: float) -> None:
        self._initialized = True
        self._last_activity = now
        self._install_initial(dcid)
        self._handshake.start(self._local_params().encode())
        self._drain_handshake(now)
        if self.is_client and self._zero_rtt is not None:
            self._attempt_early_data()

    def _attempt_early_data(self) -> None:
        """Take on the server's remembered limits for 0-RTT, or send no 0-RTT without them."""
        raw = self._handshake.remembered_transport_parameters
        try:
            tp = TransportParameters.decode(raw, from_server=True) if raw is not None else None
        except QuicError:
            tp = None
        if tp is None:
            self._zero_rtt = None
            return
        self._remembered = tp
        self._early_data = EARLY_DATA_ATTEMPTED
        self._streams.set_peer_params(
            max_data=tp.initial_max_data,
            max_stream_data_bidi_local=tp.initial_max_stream_data_bidi_local,
            max_stream_data_bidi_remote=tp.initial_max_stream_data_bidi_remote,
            max_stream_data_uni=tp.initial_max_stream_data_uni,
            max_streams_bidi=tp.initial_max_streams_bidi,
            max_streams_uni=tp.initial_max_streams_uni,
        )
        self._peer_max_datagram_frame = tp.max_datagram_frame_size or 0

    def _install_initial(self, dcid: bytes) -> None:
        self._initial_dcid = dcid
        send, recv = initial_protection(dcid, self.is_client)
        space = self._spaces[INITIAL]
        space.send = send
        space.recv = recv

    def _local_params(self) -> TransportParameters:
        c = self.config
        tp = TransportParameters(
            max_idle_timeout=int(c.idle_timeout * 1000),
            max_udp_payload_size=c.max_datagram_size,
            initial_max_data=c.conn_window,
            initial_max_stream_data_bidi_local=c.stream_window,
            initial_max_stream_data_bidi_remote=c.stream_window,
            initial_max_stream_data_uni=c.stream_window,
            initial_max_streams_bidi=c.max_streams_bidi,
            initial_max_streams_uni=c.max_streams_uni,
            ack_delay_exponent=ACK_DELAY_EXPONENT,
            max_ack_delay=int(c.max_ack_delay * 1000),
            active_connection_id_limit=c.active_connection_id_limit,
            initial_source_connection_id=self._local_cids.active[0][0],
            max_datagram_frame_size=c.max_datagram_frame_size if c.max_datagram_frame_size > 0 else None,
            initial_max_path_id=c.max_path_id,
            observed_address_role=self._qad.transport_parameter,
            max_remote_nat_traversal_addresses=c.nat_traversal_addresses,
        )
        if not self.is_client:
            tp.original_destination_connection_id = self._original_dcid
            tp.retry_source_connection_id = self._retry_scid
            tp.stateless_reset_token = self._local_cids.token(0)
        return tp

    # -- application API ---------------------------------------------------------------

    def open_stream(self, uni: bool = False) -> int:
        """A new stream of ours; StreamError when the peer's MAX_STREAMS is reached."""
        sid = self._streams.open(uni)
        if sid < 0:
            limit = self._streams.streams_blocked_frame(uni)
            if limit >= 0:
                self._pending_streams_blocked[1 if uni else 0] = limit
            raise StreamError("the peer's stream limit is reached")
        return sid

    def send_stream_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False) -> None:
        ss = self._streams.send.get(stream_id)
        if ss is None:
            raise StreamError(f"stream {stream_id} is not open for sending")
        ss.write(data, end_stream)
        self._send_queue[stream_id] = None

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        ss = self._streams.send.get(stream_id)
        if ss is None:
            raise StreamError(f"stream {stream_id} is not open for sending")
        ss.reset(error_code)
        self._send_queue[stream_id] = None

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Ask the peer to stop sending (STOP_SENDING); data still buffered is dropped."""
        rs = self._streams.recv.get(stream_id)
        if rs is None:
            raise StreamError(f"stream {stream_id} is not open for receiving")
        rs.stop(error_code)
        self._send_queue[stream_id] = None
        self._collect(stream_id)

    def consume(self, stream_id: int, n: int, now: float) -> bool:
        """With ``read_credit``: the application read ``n`` delivered bytes of the stream.

        Returns True when a MAX_DATA or MAX_STREAM_DATA frame is now due (the driver should
        then send); reads that free no frame's worth of credit cost nothing more.
        """
        streams = self._streams
        rs = streams.consume(stream_id, n)
        due = False
        if rs is not None and rs.wants_window_update():
            rs.window.update(now, self._rec.rtt.smoothed)
            self._pending_msd[stream_id] = None
            due = True
        if streams.conn_recv.should_update():
            self._pending_max_data = True
            due = True
        return due

    def send_datagram(self, data: bytes) -> None:
        """Queue an RFC 9221 datagram; DatagramError if the peer takes none this large."""
        limit = self._peer_max_datagram_frame
        # Datagrams are not split, so one must fit the base size whatever the path proves later.
        room = BASE_MTU - 1 - 20 - 4 - TAG_SIZE - 3
        if limit < room:
            room = limit
        if len(data) > room:
            raise DatagramError(f"datagram of {len(data)} bytes; the path takes {room}")
        if len(self._datagrams) >= MAX_QUEUED_DATAGRAMS:
            self._datagrams.popleft()
        self._datagrams.append(bytes(data))

    def rotate_connection_ids(self) -> None:
        """Give the peer fresh connection IDs and have it retire all the old ones."""
        if not self._handshake_complete or self._state != STATE_ESTABLISHED:
            raise QuicError(
                "connection IDs rotate only on an established connection", error_code=QuicError.INTERNAL_ERROR
            )
        for seq in self._local_cids.rotate(self._peer_cid_limit):
            self._pending_new_cids.append((0, seq))
            self._cid_issued(self._local_cids.active[seq][0])

    def ping(self) -> None:
        self._ping_pending = True

    # -- paths (multipath) --------------------------------------------------------------

    def open_path(self, addr: object, now: float, *, available: bool = True, relay: bool = False) -> int:
        """Open a path to ``addr`` (a client's act); returns its id. PATH_CHALLENGE probes
        it; :class:`PathEstablished` or, after the path idle timeout, :class:`PathAbandoned`
        follows. PathError when multipath is off, we are the server, the peer's path limit is
        reached (PATHS_BLOCKED goes out) or it gave no IDs for the next path (PATH_CIDS_BLOCKED).
        ``available`` False opens it as a backup path; ``relay`` gives it the relay paths'
        30 s idle timeout."""
        if not self._mp:
            raise PathError("multipath is not negotiated", "not-negotiated")
        if not self.is_client:
            raise PathError("only the client opens paths", "server")
        used = max(self._paths) if self._paths else 0
        if self._abandoned_ids:
            used = max(used, max(self._abandoned_ids))
        path_id = used + 1
        if path_id > min(self._local_max_path_id, self._remote_max_path_id):
            self._pending_paths_blocked = self._remote_max_path_id
            raise PathError(f"path {path_id} is beyond the peer's limit", "paths-blocked")
        peer = self._peer_path_cids.get(path_id)
        if peer is None or not peer.has_cid():
            self._pending_path_cids_blocked[path_id] = 0
            raise PathError(f"the peer gave no connection IDs for path {path_id}", "cids-blocked")
        path = self._new_path(path_id, addr, now)
        path.status = STATUS_AVAILABLE if available else STATUS_BACKUP
        if relay:
            path.idle_timeout = RELAY_PATH_IDLE_TIMEOUT
        self._no_path_at = INF
        return path_id

    def close_path(self, path_id: int, now: float, error_code: int = APPLICATION_ABANDON_PATH) -> None:
        """Abandon a path (PATH_ABANDON); what was in flight on it goes again on the others.
        PathError for an unknown or abandoned path, or the last open one."""
        self._abandon_live(self._live_path(path_id), error_code, now)

    def handle_network_change(self, lost_paths: Collection[int], now: float) -> None:
        """Our addresses changed (a new network, a renumbered host). Each path in ``lost_paths``
        can no longer send as it did, its local address being gone: the client replaces it by a
        new path to the same remote (opened first when no other path is left) and the server
        abandons it. Every other path is pinged at once with its probe backoff reset, so a dead
        one shows within a round trip or two. noq's handling, with iroh's hint as ``lost_paths``."""
        if self._state != STATE_ESTABLISHED:
            return
        live = [p for p in self._paths.values() if not p.abandoned]
        gone = [p for p in live if p.path_id in lost_paths] if self._mp else []
        keep = [p for p in live if p not in gone]
        open_first = not keep
        for path in gone:
            try:
                if open_first:
                    self._reopen(path, now)
                self._abandon_live(path, PATH_UNSTABLE_OR_POOR, now)
            except PathError:
                keep.append(path)
                continue
            if not open_first:
                try:
                    self._reopen(path, now)
                except PathError:
                    pass  # blocked on the peer's IDs: NAT traversal finds a path later
        for path in keep:
            path.recovery.pto_count = 0
            if path.validated:
                path.ping_pending = True
            elif path.challenges:
                path.challenge_at = now
        if not self._mp:
            self._ping_pending = True

    def _reopen(self, path: PathState, now: float) -> None:
        """Client: a new path to ``path``'s remote in its place, its RTT as a first guess (the
        server opens no paths)."""
        if not self.is_client:
            return
        pid = self.open_path(path.addr, now, available=path.status == STATUS_AVAILABLE,
                             relay=path.idle_timeout == RELAY_PATH_IDLE_TIMEOUT)
        new = self._paths[pid]
        # From a new local address the 4-tuple proves itself again, whatever the old one did.
        new.validated = False
        rtt = path.recovery.rtt
        if rtt.has_sample:
            new.recovery.rtt.reset_initial(rtt.smoothed)

    def _abandon_live(self, path: PathState, error_code: int, now: float) -> None:
        if not any(p is not path and not p.abandoned for p in self._paths.values()):
            raise PathError("the last open path cannot be abandoned", "last-path")
        self._abandon(path, error_code, now, False)
        self._enter(self._home)

    def set_path_status(self, path_id: int, available: bool) -> None:
        """Mark a path available (it carries data) or backup, and tell the peer."""
        path = self._live_path(path_id)
        status = STATUS_AVAILABLE if available else STATUS_BACKUP
        if path.status != status:
            path.status = status
            path.status_seq += 1
            path.status_pending = True

    def set_path_idle_timeout(self, path_id: int, timeout: float) -> None:
        """This path's idle timeout (0: none); iroh gives relay paths 30 s."""
        self._live_path(path_id).idle_timeout = timeout

    def set_path_keep_alive(self, path_id: int, interval: float) -> None:
        """This path's keep-alive PING interval (0: none)."""
        self._live_path(path_id).keep_alive = interval

    def ping_path(self, path_id: int) -> None:
        """Send a PING on this path (it is a probe on a backup path)."""
        self._live_path(path_id).ping_pending = True

    def path_status(self, path_id: int) -> tuple[bool, bool]:
        """(our status is available, the peer's status is available) of a path."""
        path = self._live_path(path_id)
        return path.status == STATUS_AVAILABLE, path.remote_status == STATUS_AVAILABLE

    # -- NAT traversal (n0) -------------------------------------------------------------

    @property
    def nat_traversal(self) -> bool:
        """Whether n0 NAT traversal is negotiated (known once the handshake completes)."""
        return self._nat is not None

    @property
    def traversal(self) -> NatTraversal | None:
        """The NAT-traversal core, once negotiated (a driver's round scheduler drives it)."""
        return self._nat

    def set_local_addresses(self, addrs: list[IpPort]) -> None:
        """Our candidate addresses: a server announces them (ADD_ADDRESS/REMOVE_ADDRESS), a
        client names them in its rounds. Unusable ones and those past the peer's limit drop."""
        self._nat_local = [canonical(host, port) for host, port in addrs]
        if self._nat is not None:
            self._nat.set_local_addresses(self._nat_local)

    def initiate_nat_traversal_round(self, now: float) -> list[IpPort]:
        """Client: start a round (REACH_OUT for each of our candidates, probes to each of the
        server's); returns the addresses probed. NatTraversalError when not negotiated, on a
        server, or (transient) without local candidates."""
        nat = self._nat
        if nat is None:
            raise NatTraversalError("NAT traversal is not negotiated")
        return nat.initiate_round(now)

    def remote_candidates(self) -> list[IpPort]:
        """Client: the server's candidate addresses as its ADD_ADDRESS frames left them."""
        return self._nat.remote_addresses() if self._nat is not None else []

    def _open_traversed(self, now: float) -> None:
        """Client: open a backup path on each traversed 4-tuple, unless one is open there; out
        of path IDs or CIDs the rest wait for MAX_PATH_ID or new IDs."""
        self._nat_open_due = False
        nat = self._nat
        if nat is None or not nat.is_client or self._state != STATE_ESTABLISHED:
            return
        while (todo := nat.poll_path_open()) is not None:
            remote = todo.remote
            if any(not p.abandoned and _nat_addr(p.addr) == remote for p in self._paths.values()):
                continue
            try:
                pid = self.open_path(remote, now, available=False)
            except PathError as exc:
                if exc.kind == "paths-blocked" or exc.kind == "cids-blocked":
                    nat.path_open_blocked(todo)
                return
            if todo.rtt is not None:
                # The probe measured this 4-tuple: a lost PATH_CHALLENGE goes again after a
                # few of its round trips, not after the 333 ms default's ~1 s.
                self._paths[pid].recovery.rtt.reset_initial(todo.rtt)
            self._events.append(TraversalPathOpened(pid, remote))

    def _on_nat_frame(self, frame: AddAddress | RemoveAddress | ReachOut, now: float) -> None:
        nat = self._nat
        if nat is None:
            frame_type = FRAME_REMOVE_ADDRESS
            if isinstance(frame, AddAddress):
                frame_type = FRAME_ADD_ADDRESS_V6 if len(frame.ip) == 16 else FRAME_ADD_ADDRESS_V4
            elif isinstance(frame, ReachOut):
                frame_type = FRAME_REACH_OUT_V6 if len(frame.ip) == 16 else FRAME_REACH_OUT_V4
            raise QuicError("NAT-traversal frame without the extension", frame_type=frame_type)
        nat.on_frame(frame, now)
        if nat.is_client and nat.take_remote_changed():
            self._events.append(RemoteCandidatesChanged(nat.remote_addresses()))

    def sendable_paths(self) -> list[int]:
        """The paths that carry data now, by id: validated available paths, else validated
        backup paths."""
        return [pid for pid, p in self._paths.items() if self._may_send_data(p)]

    def _live_path(self, path_id: int) -> PathState:
        if not self._mp:
            raise PathError("multipath is not negotiated", "not-negotiated")
        path = self._paths.get(path_id)
        if path is None or path.abandoned:
            raise PathError(f"path {path_id} is not open", "closed-path")
        return path

    def request_key_update(self) -> None:
        """Start a 1-RTT key update (RFC 9001 §6); QuicError if one is still unconfirmed."""
        keys = self._one_rtt
        if keys is None or not self._confirmed or self._state != STATE_ESTABLISHED:
            raise QuicError("key update before the handshake is confirmed", error_code=QuicError.INTERNAL_ERROR)
        if not self._key_update_allowed:
            raise QuicError("the previous key update is not acknowledged yet", error_code=QuicError.INTERNAL_ERROR)
        keys.update()
        self._key_phase_first_pn = self._rec.spaces[APPLICATION].next_pn
        self._key_update_allowed = False
        # The old receive keys go three PTOs from the next time we see the clock.
        self._discard_prev_at = -1.0

    def close(self, error_code: int = 0, reason: bytes = b"", *, application: bool = True) -> None:
        """Close with CONNECTION_CLOSE (application or transport); idempotent."""
        if not self._initialized:
            if self._state != STATE_CLOSED:
                self._state = STATE_CLOSED
                self._events.append(ConnectionTerminated(error_code, reason, 0, application, CAUSE_LOCAL))
            return
        self._start_close(error_code, reason, 0, application)

    # -- receiving ---------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: object, now: float, ecn: int = 0) -> None:
        """One UDP payload. Bad or foreign packets are dropped; protocol errors close.

        ``ecn`` is the IP header's ECN codepoint (``irohpy.quic.ack.ECN_*``) when the socket
        reports it; the counts go back to the peer in ACK_ECN frames (RFC 9000 §13.4).
        """
        self._receive(data, addr, now, ecn)
        if self._state < STATE_CLOSING:
            self._deliver(now)

    def receive_datagrams(self, datagrams: list[bytes], addr: object, now: float, ecn: int = 0) -> None:
        """A receive burst from one address: stream data is delivered once, after all of it."""
        for data in datagrams:
            self._receive(data, addr, now, ecn)
        if self._state < STATE_CLOSING:
            self._deliver(now)

    def _receive(self, data: bytes, addr: object, now: float, ecn: int) -> None:
        state = self._state
        if state >= STATE_DRAINING:
            return
        if state == STATE_CLOSING:
            # Answer with the close again, within the amplification limit and a fixed count.
            self._rec.on_datagram_received(len(data))
            if self._close_responses < MAX_CLOSE_RESPONSES:
                self._close_pending = True
            return
        try:
            packets = split_datagram(data, self.config.cid_length)
        except QuicError:
            self._check_reset(data)
            return
        if not self._initialized:
            if self.is_client:
                return
            first = packets[0]
            if first.packet_type != PACKET_INITIAL or len(data) < MIN_INITIAL_DATAGRAM or len(first.dcid) < 8:
                return
            self._path.addr = addr
            if not self._original_dcid:
                self._original_dcid = first.dcid
            elif self._retry_scid is not None and first.dcid != self._retry_scid:
                return
            self._peer_scid = first.scid
            self._peer_scid_known = True
            self._set_peer_cids(PeerCids(first.scid, self.config.active_connection_id_limit))
            try:
                self._start(first.dcid, now)
            except QuicError as exc:
                self._fail(exc)
                return
        path = self._home
        created = False
        if self._mp and packets[0].packet_type == PACKET_ONE_RTT:
            dcid = packets[0].dcid
            pid = 0 if dcid in self._local_cids and 0 in self._local_path_cids else self._path_of_cid(dcid)
            found = self._paths.get(pid) if pid >= 0 else None
            if found is None:
                if pid < 0 or self.is_client or pid in self._abandoned_ids:
                    self._check_reset(data)
                    return
                # The client opened a path: kept only if its packet authenticates.
                found = self._new_path(pid, addr, now)
                created = True
            path = found
        if path is not self._path:
            self._enter(path)
        self._rx_addr = addr
        processed = False
        for packet in packets:
            try:
                if self._receive_packet(packet, now, ecn & 3):
                    processed = True
            except QuicError as exc:
                # It decrypted and broke a rule (a ClientHello without our ALPN, say): its bytes
                # count toward the amplification budget, or our CONNECTION_CLOSE could not go
                # out until the peer retransmitted (RFC 9000 §8.1 counts every attributed byte).
                processed = True
                self._fail(exc)
            if self._state >= STATE_CLOSING:
                break
        if processed:
            if not self._addr_settled and self.is_client and path is self._home:
                # A dial may go to a placeholder that fans out over every way to the peer
                # (iroh's mapped address): the connection goes on where the answer came from.
                self._addr_settled = True
                path.addr = addr
            if path is self._home and (not self._mp or addr == path.addr):
                # QAD reports the home path's address (noq keeps one report per path); an
                # off-path probe's address is not the path's.
                self._qad.on_peer_address(addr)
            self._rec.on_datagram_received(len(data))
            self._last_activity = now
            path.last_activity = now
            self._idle_restarted = False
            if created:
                self._no_path_at = INF
                if path.path_id not in self._peer_path_cids:
                    self._pending_path_cids_blocked[path.path_id] = 0
        else:
            if created:
                del self._paths[path.path_id]
            self._check_reset(data)
        if path is not self._home:
            self._enter(self._home)
        if self._nat_open_due:
            self._open_traversed(now)

    def _cid_issued(self, cid: bytes) -> None:
        self.cids_changes += 1
        self._events.append(ConnectionIdIssued(cid))

    def _cid_retired(self, cid: bytes) -> None:
        self.cids_changes += 1
        self._events.append(ConnectionIdRetired(cid))

    def _path_of_cid(self, cid: bytes) -> int:
        """The path whose IDs of ours include ``cid``, or -1."""
        for pid, cids in self._local_path_cids.items():
            if cid in cids:
                return pid
        return -1

    def _enter(self, path: PathState) -> None:
        """Make ``path`` the one packets are processed and built for."""
        self._path = path
        self._rec = path.recovery
        self._pmtud = path.pmtud
        self._pacer = path.pacer
        peer = self._peer_path_cids.get(path.path_id)
        self._cur_peer = peer if peer is not None else PeerCids(None, 0)

    def _check_reset(self, data: bytes) -> None:
        if self._initialized and self._state < STATE_DRAINING and self._is_stateless_reset(data):
            self._state = STATE_CLOSED
            self._events.append(ConnectionTerminated(0, b"stateless reset", 0, False, CAUSE_RESET))

    def _is_stateless_reset(self, data: bytes) -> bool:
        for peer in self._peer_path_cids.values():
            if peer.is_stateless_reset(data):
                return True
        return False

    def _receive_packet(self, packet: Packet, now: float, ecn: int) -> bool:
        space_index = _SPACE_OF_PACKET.get(packet.packet_type, -1)
        if packet.packet_type == PACKET_ZERO_RTT:
            return self._receive_zero_rtt(packet, now, ecn)
        if space_index < 0:
            if self.is_client and packet.dcid in self._local_cids:
                if packet.packet_type == PACKET_RETRY:
                    self._on_retry(packet)
                elif packet.packet_type == PACKET_VERSION_NEGOTIATION:
                    self._on_version_negotiation(packet)
            return False
        path = self._path
        if path.path_id != 0:
            # Routed to this path by its DCID; only 1-RTT packets travel on later paths.
            if space_index != APPLICATION:
                return False
        elif packet.dcid not in self._local_cids and not (
            not self.is_client and packet.dcid == self._initial_dcid and space_index == INITIAL
        ):
            return False
        space = self._spaces[space_index]
        ack = path.ack if space_index == APPLICATION else space.ack
        try:
            if space_index == APPLICATION:
                keys = self._one_rtt
                if keys is None:
                    return False
                unprotect_headers([packet], keys.recv_hp, ack.largest)
                phase = keys.key_phase
                plain = open_one_rtt(keys, packet, path.path_id)
                if keys.key_phase != phase:
                    # The peer updated its keys and ours followed: the new phase starts now.
                    self._key_phase_first_pn = self._home.recovery.spaces[APPLICATION].next_pn
                    self._key_update_allowed = False
                    self._discard_prev_at = now + 3.0 * self._rec.rtt.pto_base()
            else:
                recv = space.recv
                if recv is None:
                    return False
                unprotect_headers([packet], recv.hp, ack.largest)
                plain = open_packet(recv.key, packet)
        except QuicDecryptError:
            return False
        pn = packet.packet_number
        if ack.is_duplicate(pn):
            return True
        if self.is_client and not self._peer_scid_known and space_index == INITIAL:
            self._peer_scid = packet.scid
            self._peer_scid_known = True
            self._peer_cids.set_first(packet.scid)
        if space_index == APPLICATION:
            path.ack_dirty = True
            largest = ack.largest
            self._rx_probing = True
            eliciting = self._on_frames_short(plain, packet, now)
            if self._state >= STATE_CLOSING:
                return True
            if (
                not self.is_client
                and not self._rx_probing
                and pn > largest
                and self._rx_addr != path.addr
                and self._handshake_complete
            ):
                self._migrate(path, now)
        else:
            eliciting = False
            for frame in decode_frames(plain, packet.packet_type):
                if self._on_frame(frame, space_index, packet, now):
                    eliciting = True
                if self._state >= STATE_CLOSING:
                    return True
        ack.on_packet(pn, eliciting, ecn, now)
        if self._rx_ping:
            self._rx_ping = False
            ack.ack_at_once(now)
        if space_index != APPLICATION:
            space.ack_dirty = True
        if eliciting:
            self._last_eliciting_received = now
            if space_index == APPLICATION:
                path.peer_eliciting = now
        if space_index == HANDSHAKE and not self.is_client:
            # A Handshake packet proves the client has our keys, so its address (RFC 9000 §8.1).
            self._rec.address_validated = True
            if not self._spaces[INITIAL].discarded:
                self._discard_space(INITIAL)
        return True

    def _migrate(self, path: PathState, now: float) -> None:
        """Server: the peer's newest non-probing packet on ``path`` came from another address
        (NAT rebinding, a new interface; RFC 9000 §9). Answers follow it there, and the path
        carries data again once a PATH_CHALLENGE proved the address. Only authenticated packets
        with a packet number above every earlier one get here, so a replay moves nothing."""
        path.addr = self._rx_addr
        path.validated = False
        path.challenges.clear()
        path.challenges_lost = 0
        path.challenge_at = now
        path.ping_pending = False

    def _on_frames_short(self, plain: bytes, packet: Packet, now: float) -> bool:
        """The frames of a 1-RTT payload in order; STREAM frames, the bulk of the data path,
        are parsed and applied without a frame object. Returns whether any is ack-eliciting."""
        end = len(plain)
        if end == 0:
            raise QuicDecodeError("packet without frames", error_code=QuicError.PROTOCOL_VIOLATION)
        streams = self._streams
        recv_dirty = self._recv_dirty
        eliciting = False
        pos = 0
        while pos < end:
            kind = plain[pos]
            if 0x08 <= kind <= 0x0F:
                sid, offset, data, fin, pos = pull_stream_frame(plain, pos)
                streams.on_stream_frame(sid, offset, data, fin)
                recv_dirty[sid] = None
                eliciting = True
                self._rx_probing = False
                continue
            if kind == 0x01:  # PING, the keep-alive
                pos += 1
                self._rx_ping = True
                eliciting = True
                self._rx_probing = False
                continue
            if kind == 0x00:  # PADDING runs to the next frame
                pos += 1
                while pos < end and plain[pos] == 0:
                    pos += 1
                continue
            if kind == FRAME_ACK or kind == FRAME_ACK_ECN or kind == FRAME_PATH_ACK or kind == FRAME_PATH_ACK_ECN:
                ack_frame, pos = pull_ack_frame(plain, pos)
                self._rx_probing = False
                self._on_ack(ack_frame, APPLICATION, now)
                if self._state >= STATE_CLOSING:
                    break
                continue
            frame, pos = decode_frame(plain, pos, PACKET_ONE_RTT)
            if not isinstance(frame, _PROBING_FRAMES):
                self._rx_probing = False
            if self._on_frame(frame, APPLICATION, packet, now):
                eliciting = True
            if self._state >= STATE_CLOSING:
                break
        return eliciting

    def _receive_zero_rtt(self, packet: Packet, now: float, ecn: int) -> bool:
        """A server's 0-RTT packet: application data under the early keys it accepted."""
        prot = self._zero_rtt
        if prot is None or self.is_client:
            return False
        if packet.dcid not in self._local_cids and packet.dcid != self._initial_dcid:
            return False
        ack = self._path.ack
        try:
            unprotect_headers([packet], prot.hp, ack.largest)
            plain = open_packet(prot.key, packet)
        except QuicDecryptError:
            return False
        pn = packet.packet_number
        if ack.is_duplicate(pn):
            return True
        eliciting = False
        for frame in decode_frames(plain, PACKET_ZERO_RTT):
            if self._on_frame(frame, APPLICATION, packet, now):
                eliciting = True
            if self._state >= STATE_CLOSING:
                return True
        ack.on_packet(pn, eliciting, ecn, now)
        if self._rx_ping:
            self._rx_ping = False
            ack.ack_at_once(now)
        self._path.ack_dirty = True
        return True

    def _on_retry(self, packet: Packet) -> None:
        """RFC 9000 §17.2.5.2: one Retry, before any Initial, with a valid integrity tag."""
        if self._token or self._peer_scid_known or packet.scid == self._initial_dcid:
            return
        if not verify_retry(packet, self._original_dcid):
            return
        self._token = packet.token
        self._retry_scid = packet.scid
        self._peer_cids.set_first(packet.scid)
        self._install_initial(packet.scid)
        # Everything sent in Initial packets goes again under the new keys; packet numbers go on.
        rec = self._rec
        sent = rec.spaces[INITIAL]
        for p in sent.packets.values():
            if p.in_flight:
                rec.bytes_in_flight -= p.size
        sent.packets.clear()
        sent.ack_eliciting_in_flight = 0
        sent.loss_time = INF
        crypto = self._spaces[INITIAL].crypto_send
        crypto.on_frame_lost(0, crypto.sent, False)

    def _on_version_negotiation(self, packet: Packet) -> None:
        """A server that speaks no version of ours: give up (RFC 9000 §6.2)."""
        if self._peer_scid_known or self._token or VERSION_1 in packet.supported_versions:
            return
        if packet.scid != self._original_dcid:
            return
        self._state = STATE_CLOSED
        self._events.append(ConnectionTerminated(0, b"no common QUIC version", 0, False, CAUSE_PEER))

    def _on_frame(self, frame: Frame, space: int, packet: Packet, now: float) -> bool:
        """Apply one frame; returns whether it is ack-eliciting."""
        streams = self._streams
        if isinstance(frame, Stream):
            streams.on_stream_frame(frame.stream_id, frame.offset, frame.data, frame.fin)
            self._recv_dirty[frame.stream_id] = None
            return True
        if isinstance(frame, Ack):
            self._on_ack(frame, space, now)
            return False
        if isinstance(frame, Padding):
            return False
        if isinstance(frame, Ping):
            self._rx_ping = True
            return True
        if isinstance(frame, Crypto):
            data = self._spaces[space].crypto_recv.on_frame(frame.offset, frame.data)
            if data:
                self._handshake.receive(_EPOCH_OF_SPACE[space], data)
                self._drain_handshake(now)
            return True
        if isinstance(frame, Datagram):
            limit = self.config.max_datagram_frame_size
            if limit <= 0 or len(frame.data) > limit:
                raise QuicError("DATAGRAM not negotiated or too large", frame_type=FRAME_DATAGRAM)
            self._events.append(DatagramReceived(frame.data))
            return True
        if isinstance(frame, MaxData):
            if frame.maximum > streams.conn_send.max_data and self._conn_blocked:
                self._send_queue.update(self._conn_blocked)
                self._conn_blocked.clear()
            streams.on_max_data(frame.maximum)
            return True
        if isinstance(frame, MaxStreamData):
            streams.on_max_stream_data(frame.stream_id, frame.maximum)
            if frame.stream_id in streams.send:
                self._send_queue[frame.stream_id] = None
            return True
        if isinstance(frame, MaxStreams):
            streams.on_max_streams(not frame.bidi, frame.maximum)
            return True
        if isinstance(frame, ResetStream):
            rs = streams.recv_stream(frame.stream_id)
            if rs is not None:
                first = rs.reset_code < 0
                streams.on_reset_stream(frame.stream_id, frame.error_code, frame.final_size)
                if first:
                    self._events.append(StreamReset(frame.stream_id, frame.error_code))
                self._collect(frame.stream_id)
            return True
        if isinstance(frame, StopSending):
            ss = streams.send_stream(frame.stream_id)
            if ss is not None:
                first = ss.stop_code < 0
                ss.on_stop_sending(frame.error_code)
                if first:
                    self._events.append(StopSendingReceived(frame.stream_id, frame.error_code))
                self._send_queue[frame.stream_id] = None
            return True
        if isinstance(frame, StreamDataBlocked):
            streams.recv_stream(frame.stream_id)
            return True
        if isinstance(frame, (DataBlocked, StreamsBlocked)):
            return True
        if isinstance(frame, PathResponse):
            self._on_path_response(frame.data, now)
            return True
        if isinstance(frame, NewConnectionId):
            self._on_new_cid(frame)
            return True
        if isinstance(frame, RetireConnectionId):
            pid = 0
            if frame.path_id is not None:
                self._need_mp(0x3E79)
                pid = frame.path_id
            local = self._local_path_cids.get(pid)
            if local is not None:
                retired = local.retire(frame.sequence, packet.dcid)
                if retired is not None:
                    self._cid_retired(retired)
                    if pid == 0:
                        self._issue_cids()
                    elif pid not in self._abandoned_ids:
                        self._issue_path_cids(pid, local)
            return True
        if isinstance(frame, PathChallenge):
            path = self._path
            if not self._mp or self._rx_addr == path.addr:
                if len(path.responses) < MAX_RESPONSES:
                    path.responses.append(frame.data)
            elif len(path.off_path) < MAX_RESPONSES:
                path.off_path.append((frame.data, self._rx_addr))
            return True
        if isinstance(frame, (PathAbandon, PathStatus, MaxPathId, PathsBlocked, PathCidsBlocked)):
            self._on_path_frame(frame, now)
            return True
        if isinstance(frame, (AddAddress, RemoveAddress, ReachOut)):
            self._on_nat_frame(frame, now)
            return True
        if isinstance(frame, ConnectionClose):
            self._on_peer_close(frame, now)
            return False
        if isinstance(frame, HandshakeDone):
            if not self.is_client:
                raise QuicError("HANDSHAKE_DONE from a client", frame_type=FRAME_HANDSHAKE_DONE)
            if not self._confirmed:
                self._confirm()
            return True
        if isinstance(frame, NewToken):
            if not self.is_client:
                raise QuicError("NEW_TOKEN from a client", frame_type=FRAME_NEW_TOKEN)
            return True
        if isinstance(frame, ObservedAddress):
            observed = self._qad.on_frame(frame)
            if observed is not None:
                self._events.append(observed)
            return True
        raise QuicError(f"{type(frame).__name__} frame of an extension not negotiated")

    def _on_ack(self, frame: Ack, space: int, now: float) -> None:
        path: PathState | None = self._path
        if frame.path_id is not None:
            self._need_mp(0x3E)
            path = self._paths.get(frame.path_id)
        elif space == APPLICATION and self._mp:
            # An ACK of application data acknowledges path 0's packets.
            path = self._paths.get(0)
        if path is None or path.abandoned:
            return  # a path that is gone: its packets went again elsewhere
        delay = 0.0
        if space == APPLICATION:
            delay = (frame.delay << self._peer_ack_delay_exponent) / 1e6
        ecn_ce = frame.ecn[2] if frame.ecn is not None else -1
        rec = path.recovery
        rec.on_ack_received(space, frame.ranges, delay, now, ecn_ce)
        acked = rec.acked
        if acked and space == APPLICATION and self.is_client and not self._confirmed:
            self._confirm()
        for p in acked:
            self._on_packet_acked(space, p, now, path)
        for p in rec.lost:
            self._on_packet_lost(space, p, now, path)

    def _on_packet_acked(self, space: int, p: SentPacket, now: float, path: PathState) -> None:
        if space == APPLICATION:
            if path is self._home and p.pn >= self._key_phase_first_pn:
                self._key_update_allowed = True
            pmtud = path.pmtud
            if p.mtu_probe:
                pmtud.on_probe_acked(p.size, now)
                if pmtud.mtu != path.max_datagram_size:
                    self._mtu_changed(path)
            else:
                pmtud.on_packet_acked(p.pn, p.size)
        streams = self._streams
        for kind, a, b, c in cast(SentFrames, p.frames):
            if kind == K_STREAM:
                ss = streams.send.get(a)
                if ss is not None:
                    ss.on_frame_acked(b, c >> 1, bool(c & 1))
                    if ss.is_done():
                        self._collect(a)
            elif kind == K_ACK:
                if space != APPLICATION:
                    self._spaces[space].ack.on_ack_acked(a)
                else:
                    acked_path = self._paths.get(b)
                    if acked_path is not None:
                        acked_path.ack.on_ack_acked(a)
            elif kind == K_CRYPTO:
                self._spaces[space].crypto_send.on_frame_acked(a, b, False)
            elif kind == K_RESET:
                ss = streams.send.get(a)
                if ss is not None:
                    ss.on_reset_acked()
                    self._collect(a)
            elif kind == K_NAT:
                self._nat_sent.pop(a, None)

    def _on_packet_lost(self, space: int, p: SentPacket, now: float, path: PathState) -> None:
        self.lost_packets += 1
        self.lost_bytes += p.size
        if space == APPLICATION:
            if p.mtu_probe:
                path.pmtud.on_probe_lost(p.size, now)
            elif path.pmtud.on_packet_lost(p.pn, p.size, now):
                self._mtu_changed(path)  # a black hole: back to 1200 bytes
        self._repair(space, p)

    def _repair(self, space: int, p: SentPacket) -> None:
        """Queue again what a lost (or rejected 0-RTT) packet carried that must arrive."""
        streams = self._streams
        for kind, a, b, c in cast(SentFrames, p.frames):
            if kind == K_STREAM:
                ss = streams.send.get(a)
                if ss is not None:
                    ss.on_frame_lost(b, c >> 1, bool(c & 1))
                    self._send_queue[a] = None
            elif kind == K_CRYPTO:
                sp = self._spaces[space]
                if not sp.discarded:
                    sp.crypto_send.on_frame_lost(a, b, False)
            elif kind == K_RESET:
                ss = streams.send.get(a)
                if ss is not None:
                    ss.on_reset_lost()
                    self._send_queue[a] = None
            elif kind == K_STOP:
                rs = streams.recv.get(a)
                if rs is not None:
                    rs.on_stop_sending_lost()
                    self._send_queue[a] = None
            elif kind == K_MAX_DATA:
                if streams.conn_recv.on_update_lost(a):
                    self._pending_max_data = True
            elif kind == K_MAX_STREAM_DATA:
                rs = streams.recv.get(a)
                if rs is not None and rs.final_size < 0 and rs.window.on_update_lost(b):
                    self._pending_msd[a] = None
            elif kind == K_MAX_STREAMS:
                if b == streams.peer_limit_sent[a]:
                    self._pending_max_streams[a] = True
            elif kind == K_NEW_CID:
                local = self._local_path_cids.get(b)
                if local is not None and a in local.active and b not in self._abandoned_ids:
                    self._pending_new_cids.append((b, a))
            elif kind == K_RETIRE_CID:
                self._pending_retire.append((b, a))
            elif kind == K_HANDSHAKE_DONE:
                self._pending_handshake_done = True
            elif kind == K_PATH_ABANDON:
                self._pending_abandons[a] = b
            elif kind == K_PATH_STATUS:
                lost_path = self._paths.get(a)
                if lost_path is not None and not lost_path.abandoned and lost_path.status_seq == b:
                    lost_path.status_pending = True
            elif kind == K_MAX_PATH_ID:
                if a == self._local_max_path_id:
                    self._pending_max_path_id = True
            elif kind == K_OBSERVED_ADDRESS:
                self._qad.on_lost()
            elif kind == K_NAT:
                nat_frame = self._nat_sent.pop(a, None)
                if nat_frame is not None and self._nat is not None:
                    self._nat.on_frame_lost(nat_frame)

    def _on_peer_close(self, frame: ConnectionClose, now: float) -> None:
        self._state = STATE_DRAINING
        self._close_deadline = now + 3.0 * self._rec.rtt.pto_base()
        self._events.append(
            ConnectionTerminated(frame.error_code, frame.reason, frame.frame_type, frame.application, CAUSE_PEER)
        )

    def _fail(self, exc: QuicError) -> None:
        """A protocol error, ours to report: close with its transport error code."""
        self._start_close(exc.error_code, str(exc).encode()[:256], exc.frame_type, False)

    def _start_close(self, error_code: int, reason: bytes, frame_type: int, application: bool) -> None:
        if self._state >= STATE_CLOSING:
            return
        self._state = STATE_CLOSING
        self._close = (error_code, reason, frame_type, application)
        self._close_pending = True
        self._events.append(ConnectionTerminated(error_code, reason, frame_type, application, CAUSE_LOCAL))

    # -- TLS ------------------------------------------------------------------------

    def _drain_handshake(self, now: float) -> None:
        hs = self._handshake
        for epoch, is_send, suite, secret in hs.take_keys():
            if epoch == EPOCH_HANDSHAKE:
                space = self._spaces[HANDSHAKE]
                if is_send:
                    space.send = Protection(suite, secret)
                else:
                    space.recv = Protection(suite, secret)
                self._rec.has_handshake_keys = True
            elif epoch == EPOCH_ONE_RTT:
                secrets = self._one_rtt_secrets
                secrets[is_send] = (suite, secret)
                if len(secrets) == 2 and self._one_rtt is None:
                    self._one_rtt = OneRttKeys(suite, secrets[True][1], secrets[False][1])
                    self._half_rtt = None
                elif is_send and not self.is_client:
                    self._half_rtt = Protection(suite, secret)
            elif epoch == EPOCH_ZERO_RTT and is_send == self.is_client:
                self._zero_rtt = Protection(suite, secret)
                if not self.is_client:
                    self._early_data = EARLY_DATA_ACCEPTED
        for epoch, data in hs.take_output():
            if epoch == EPOCH_INITIAL:
                space_index = INITIAL
            elif epoch == EPOCH_HANDSHAKE:
                space_index = HANDSHAKE
            else:
                space_index = APPLICATION
            space = self._spaces[space_index]
            if not space.discarded:
                space.crypto_send.write(data)
        if self._peer_params is None:
            raw = hs.peer_transport_parameters
            if raw is not None:
                self._apply_peer_params(TransportParameters.decode(raw, from_server=self.is_client))
        if not self._handshake_complete and hs.complete and self._one_rtt is not None:
            if self._peer_params is None:
                raise QuicError("peer sent no transport parameters", error_code=QuicError.TRANSPORT_PARAMETER_ERROR)
            self._handshake_complete = True
            self._state = STATE_ESTABLISHED
            if self.is_client:
                self._settle_early_data(hs.early_data_accepted)
            else:
                self._zero_rtt = None
            self._events.append(
                HandshakeCompleted(hs.alpn, hs.peer_id, self._early_data == EARLY_DATA_ACCEPTED, hs.session_resumed)
            )
            if not self.is_client:
                self._pending_handshake_done = True
                self._confirm()
            self._issue_cids()
            tp = cast(TransportParameters, self._peer_params)
            if self.config.max_path_id is not None and tp.initial_max_path_id is not None:
                self._start_multipath(tp.initial_max_path_id, now)
                c = self.config
                ours = TransportParameters(
                    initial_max_path_id=c.max_path_id, max_remote_nat_traversal_addresses=c.nat_traversal_addresses
                )
                self._nat = negotiated(self.is_client, ours, tp, initial_rtt=c.initial_rtt)
                if self._nat is not None and self._nat_local:
                    self._nat.set_local_addresses(self._nat_local)

    def _settle_early_data(self, accepted: bool) -> None:
        """A client's handshake completed: 0-RTT keys go; rejected 0-RTT data goes again in 1-RTT."""
        self._zero_rtt = None
        if self._early_data != EARLY_DATA_ATTEMPTED:
            return
        self._early_data = EARLY_DATA_ACCEPTED if accepted else EARLY_DATA_REJECTED
        pns, self._zero_rtt_pns = self._zero_rtt_pns, []
        if not accepted:
            for p in self._rec.forget(APPLICATION, pns):
                self._repair(APPLICATION, p)

    def _check_remembered(self, tp: TransportParameters) -> None:
        """A server that accepted 0-RTT must not lower a limit the client's 0-RTT data used."""
        old = self._remembered
        if old is not None and not tp.keeps_0rtt_limits(old):
            raise QuicError("server lowered a limit after accepting 0-RTT", error_code=QuicError.PROTOCOL_VIOLATION)

    def _apply_peer_params(self, tp: TransportParameters) -> None:
        bad = QuicError.TRANSPORT_PARAMETER_ERROR
        if tp.initial_source_connection_id != self._peer_scid:
            raise QuicError("initial_source_connection_id does not match", error_code=bad)
        if self.is_client and self._handshake.early_data_accepted:
            self._check_remembered(tp)
        if self.is_client:
            if tp.original_destination_connection_id != self._original_dcid:
                raise QuicError("original_destination_connection_id does not match", error_code=bad)
            if tp.retry_source_connection_id != self._retry_scid:
                raise QuicError("retry_source_connection_id does not match", error_code=bad)
        if tp.initial_max_path_id is not None and (not self._peer_scid or self._local_cids.length == 0):
            raise QuicError("multipath with zero-length connection IDs", error_code=QuicError.PROTOCOL_VIOLATION)
        self._peer_params = tp
        self._streams.set_peer_params(
            max_data=tp.initial_max_data,
            max_stream_data_bidi_local=tp.initial_max_stream_data_bidi_local,
            max_stream_data_bidi_remote=tp.initial_max_stream_data_bidi_remote,
            max_stream_data_uni=tp.initial_max_stream_data_uni,
            max_streams_bidi=tp.initial_max_streams_bidi,
            max_streams_uni=tp.initial_max_streams_uni,
        )
        self._rec.max_ack_delay = tp.max_ack_delay / 1000.0
        self._peer_ack_delay_exponent = tp.ack_delay_exponent
        if tp.max_idle_timeout > 0:
            peer_idle = tp.max_idle_timeout / 1000.0
            if self._idle_timeout <= 0.0 or peer_idle < self._idle_timeout:
                self._idle_timeout = peer_idle
        self._peer_max_datagram_frame = tp.max_datagram_frame_size or 0
        self._peer_cid_limit = tp.active_connection_id_limit
        self._pmtud.set_peer_max_udp_payload(tp.max_udp_payload_size)
        self._qad.on_peer_role(tp.observed_address_role)
        if self.is_client and tp.stateless_reset_token is not None:
            self._peer_cids.set_reset_token(0, tp.stateless_reset_token)

    def _confirm(self) -> None:
        """The handshake is confirmed (RFC 9001 §4.1.2): Handshake keys go."""
        self._confirmed = True
        self._key_update_allowed = True
        self._rec.on_handshake_confirmed()
        if not self._spaces[INITIAL].discarded:
            self._discard_space(INITIAL)
        if not self._spaces[HANDSHAKE].discarded:
            self._discard_space(HANDSHAKE)

    def _discard_space(self, index: int) -> None:
        space = self._spaces[index]
        space.send = None
        space.recv = None
        space.discarded = True
        space.crypto_send = SendStream(0, VARINT_MAX)
        self._rec.discard_space(index)

    def _issue_cids(self) -> None:
        for seq in self._local_cids.issue(self._peer_cid_limit):
            self._pending_new_cids.append((0, seq))
            self._cid_issued(self._local_cids.active[seq][0])

    # -- multipath --------------------------------------------------------------------

    def _need_mp(self, frame_type: int) -> None:
        if not self._mp:
            raise QuicError("multipath frame without multipath", frame_type=frame_type)

    def _start_multipath(self, peer_max_path_id: int, now: float) -> None:
        """Both sides offered multipath: path timers start and every path the limits allow
        gets its IDs (noq issues them all at once)."""
        self._mp = True
        self._local_max_path_id = cast(int, self.config.max_path_id)
        self._remote_max_path_id = peer_max_path_id
        home = self._home
        home.keep_alive = self.config.path_keep_alive
        home.idle_timeout = self.config.path_idle_timeout
        home.last_activity = now
        self._issue_first_path_cids()

    def _issue_first_path_cids(self) -> None:
        top = min(self._local_max_path_id, self._remote_max_path_id)
        pid = self._max_path_id_with_cids + 1
        while pid <= top:
            if pid not in self._local_path_cids and pid not in self._abandoned_ids:
                local = LocalCids(os.urandom(self.config.cid_length), self._reset_key)
                self._local_path_cids[pid] = local
                self._pending_new_cids.append((pid, 0))
                self._cid_issued(local.active[0][0])
                self._issue_path_cids(pid, local)
            pid += 1
        if top > self._max_path_id_with_cids:
            self._max_path_id_with_cids = top

    def _issue_path_cids(self, pid: int, local: LocalCids) -> None:
        for seq in local.issue(self._peer_cid_limit):
            self._pending_new_cids.append((pid, seq))
            self._cid_issued(local.active[seq][0])

    def _on_new_cid(self, frame: NewConnectionId) -> None:
        pid = 0
        if frame.path_id is not None:
            self._need_mp(0x3E78)
            pid = frame.path_id
            if pid > self._local_max_path_id:
                raise QuicError("PATH_NEW_CONNECTION_ID beyond our path limit", frame_type=0x3E78)
            if pid in self._abandoned_ids:
                return
        peer = self._peer_path_cids.get(pid)
        if peer is None:
            peer = self._peer_path_cids[pid] = PeerCids(None, self.config.active_connection_id_limit)
            self._pending_path_cids_blocked.pop(pid, None)
            self._nat_open_due = self._nat is not None
        peer.on_new(frame.sequence, frame.retire_prior_to, frame.connection_id, frame.reset_token)
        for seq in peer.to_retire:
            self._pending_retire.append((pid, seq))
        peer.to_retire.clear()
        if self._path.path_id == pid:
            self._cur_peer = peer

    def _on_path_frame(self, frame: PathAbandon | PathStatus | MaxPathId | PathsBlocked | PathCidsBlocked, now: float) -> None:
        """PATH_ABANDON, PATH_STATUS_*, MAX_PATH_ID, PATHS_BLOCKED, PATH_CIDS_BLOCKED."""
        if isinstance(frame, PathAbandon):
            self._need_mp(0x3E75)
            pid = frame.path_id
            path = self._paths.get(pid)
            if path is None:
                if pid <= self._local_max_path_id and pid not in self._abandoned_ids and pid not in self._paths:
                    self._abandoned_ids.add(pid)
                    self._peer_path_cids.pop(pid, None)
                return
            if path.remote_abandoned:
                return
            path.remote_abandoned = True
            if not path.abandoned:
                self._abandon(path, frame.error_code, now, True)
            # The peer's path is draining: it may open another in its place (noq's rule).
            self._local_max_path_id += 1
            self._pending_max_path_id = True
            self._issue_first_path_cids()
        elif isinstance(frame, PathStatus):
            self._need_mp(FRAME_PATH_STATUS_AVAILABLE if frame.available else FRAME_PATH_STATUS_BACKUP)
            path = self._paths.get(frame.path_id)
            if path is not None and frame.sequence > path.remote_status_seq:
                path.remote_status_seq = frame.sequence
                path.remote_status = STATUS_AVAILABLE if frame.available else STATUS_BACKUP
                self._events.append(PathStatusReceived(frame.path_id, frame.available))
        elif isinstance(frame, MaxPathId):
            self._need_mp(0x3E7A)
            if frame.path_id > self._remote_max_path_id:
                self._remote_max_path_id = frame.path_id
                self._issue_first_path_cids()
                self._nat_open_due = self._nat is not None
        elif isinstance(frame, PathsBlocked):
            self._need_mp(0x3E7B)
            if frame.path_id > self._local_max_path_id:
                raise QuicError("PATHS_BLOCKED beyond our path limit", frame_type=0x3E7B)
            self.paths_blocked_received += 1
        else:
            self._need_mp(0x3E7C)
            if frame.path_id > self._local_max_path_id:
                raise QuicError("PATH_CIDS_BLOCKED beyond our path limit", frame_type=0x3E7C)
            local = self._local_path_cids.get(frame.path_id)
            if local is not None and frame.next_sequence > local.next_sequence:
                raise QuicError("PATH_CIDS_BLOCKED of an ID never issued", frame_type=0x3E7C)
            self.path_cids_blocked_received += 1

    def _new_path(self, pid: int, addr: object, now: float) -> PathState:
        """A path after the handshake, validated by PATH_CHALLENGE before it carries data."""
        c = self.config
        path = PathState(
            pid,
            addr,
            is_server=not self.is_client,
            initial_rtt=c.initial_rtt,
            max_ack_delay=c.max_ack_delay,
            max_datagram_size=c.max_datagram_size,
        )
        path.start_confirmed()
        tp = cast(TransportParameters, self._peer_params)
        path.recovery.max_ack_delay = tp.max_ack_delay / 1000.0
        path.pmtud.set_peer_max_udp_payload(tp.max_udp_payload_size)
        for other in self._paths.values():
            if other.validated and not other.abandoned and other.addr == addr:
                # Same network path as a validated one: no need to wait (noq's rule).
                path.validated = True
                path.recovery.address_validated = True
        path.challenge_at = now
        path.keep_alive = c.path_keep_alive
        path.idle_timeout = c.path_idle_timeout
        path.last_activity = now
        self._paths[pid] = path
        return path

    def _on_path_response(self, data: bytes, now: float) -> None:
        """A PATH_RESPONSE validates the path it came on, if it echoes our challenge there and
        arrived from the path's address (an off-path copy proves nothing)."""
        path = self._path
        if data not in path.challenges or self._rx_addr != path.addr or path.abandoned:
            nat = self._nat
            if nat is not None:
                remote = _nat_addr(self._rx_addr)
                if remote is not None and nat.on_path_response(remote, data, None, now) and nat.is_client:
                    self._nat_open_due = True
            return
        path.challenges.clear()
        path.challenge_at = INF
        path.challenges_lost = 0
        path.validated = True
        path.recovery.address_validated = True
        if not path.established_reported:
            path.established_reported = True
            self._events.append(PathEstablished(path.path_id))

    def _abandon(self, path: PathState, error_code: int, now: float, remote: bool) -> None:
        """Stop using ``path``: PATH_ABANDON goes out, its in-flight frames go again on the
        other paths, and its state drains after 3 PTO."""
        pid = path.path_id
        path.abandoned = True
        self._pending_abandons[pid] = error_code
        path.challenge_at = INF
        path.challenges.clear()
        path.responses.clear()
        path.off_path.clear()
        path.ping_pending = False
        path.status_pending = False
        self._abandoned_ids.add(pid)
        self._pending_new_cids = [item for item in self._pending_new_cids if item[0] != pid]
        rec = path.recovery
        rec.probes = 0
        sent = rec.spaces[APPLICATION]
        for p in rec.forget(APPLICATION, list(sent.packets)):
            self._repair(APPLICATION, p)
        path.drain_at = now + 3.0 * path.pto()
        self._events.append(PathAbandoned(pid, error_code, remote, path.established_reported))
        live = [p for p in self._paths.values() if not p.abandoned]
        if live:
            if path is self._home:
                self._home = live[0]
        elif remote:
            self._no_path_at = now + 3.0 * (3.0 * self.config.initial_rtt + self._rec.max_ack_delay)

    def _drain_path(self, path: PathState) -> None:
        """An abandoned path's 3 PTO are over: its state and IDs go."""
        pid = path.path_id
        del self._paths[pid]
        local = self._local_path_cids.pop(pid, None)
        if local is not None:
            for cid in local.cids():
                self._cid_retired(cid)
        self._peer_path_cids.pop(pid, None)
        if path is self._home and self._paths:
            self._home = next(iter(self._paths.values()))

    def _sendable_path(self) -> bool:
        for path in self._paths.values():
            if self._may_send_data(path):
                return True
        return False

    def _may_send_data(self, path: PathState) -> bool:
        """noq's scheduling: validated available paths carry data; backup paths only while
        no validated available path exists; nothing before validation (or the handshake's
        path, before multipath)."""
        if not self._mp:
            return True
        if path.abandoned or not path.validated or path.path_id not in self._peer_path_cids:
            return False
        if path.status == STATUS_AVAILABLE:
            return True
        for other in self._paths.values():
            if (
                other.status == STATUS_AVAILABLE
                and other.validated
                and not other.abandoned
                and other.path_id in self._peer_path_cids
            ):
                return False
        return True

    # -- stream delivery --------------------------------------------------------------

    def _deliver(self, now: float) -> None:
        streams = self._streams
        streams.opened_by_peer.clear()
        if not self._recv_dirty:
            return
        srtt = self._rec.rtt.smoothed
        for sid in self._recv_dirty:
            rs = streams.recv.get(sid)
            if rs is None or rs.reset_code >= 0 or rs.stop_code >= 0:
                continue
            data = rs.read(credit=not self.config.read_credit)
            fin = rs.is_finished() and sid not in self._fin_delivered
            if fin:
                self._fin_delivered.add(sid)
            if data or fin:
                self._events.append(StreamDataReceived(sid, data, fin))
            if rs.wants_window_update():
                rs.window.update(now, srtt)
                self._pending_msd[sid] = None
            self._collect(sid, delivered=True)
        self._recv_dirty.clear()

    def _collect(self, sid: int, delivered: bool = False) -> None:
        """Forget ``sid`` if both halves are done, but never before what it received (a FIN
        that finished it, say) went out as an event: an ACK in the same burst must wait."""
        if not delivered and sid in self._recv_dirty:
            return
        streams = self._streams
        if streams.collect(sid):
            self._fin_delivered.discard(sid)
            self._pending_msd.pop(sid, None)
            if streams.max_streams_frame(False) >= 0:
                self._pending_max_streams[0] = True
            if streams.max_streams_frame(True) >= 0:
                self._pending_max_streams[1] = True

    # -- timers -------------------------------------------------------------------

    def _idle_deadline(self) -> float:
        if self._idle_timeout <= 0.0:
            return INF
        floor = 3.0 * self._rec.rtt.pto_base()
        timeout = self._idle_timeout if self._idle_timeout > floor else floor
        return self._last_activity + timeout

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must run, or None."""
        state = self._state
        if state == STATE_CLOSED or not self._initialized:
            return None
        if state >= STATE_CLOSING:
            return self._close_deadline if self._close_deadline < INF else None
        t = self._idle_deadline()
        for index in (INITIAL, HANDSHAKE):
            space = self._spaces[index]
            if not space.discarded and space.ack.ack_deadline < t and self._keys_ready(index):
                t = space.ack.ack_deadline
        app_keys = self._keys_ready(APPLICATION)
        for path in self._paths.values():
            loss = path.recovery.loss_deadline()
            if loss < t:
                t = loss
            if app_keys and path.ack.ack_deadline < t:
                # An abandoned path's ACKs ride on a path that carries data, if any.
                if not path.abandoned or self._sendable_path():
                    t = path.ack.ack_deadline
            if self._mp:
                p = self._path_deadline(path)
                if p < t:
                    t = p
        if self._no_path_at < t:
            t = self._no_path_at
        nat = self._nat
        if nat is not None and nat.deadline is not None and nat.deadline < t:
            t = nat.deadline
        if self._pacing_at < t:
            t = self._pacing_at
        if 0.0 <= self._discard_prev_at < t:
            t = self._discard_prev_at
        if self.config.keep_alive > 0.0 and self._handshake_complete and not self._ping_pending:
            k = self._keep_alive_at()
            if k < t:
                t = k
        return t if t < INF else None

    def handle_timer(self, now: float) -> None:
        """Run whatever deadline passed: close periods, idle timeout, loss detection, PTO."""
        state = self._state
        if state == STATE_CLOSED or not self._initialized:
            return
        if state >= STATE_CLOSING:
            if now >= self._close_deadline:
                self._state = STATE_CLOSED
            return
        if now >= self._idle_deadline():
            self._state = STATE_CLOSED
            self._events.append(ConnectionTerminated(0, b"idle timeout", 0, False, CAUSE_IDLE))
            return
        if now >= self._no_path_at:
            self._no_path_at = INF
            self._start_close(QuicError.NO_VIABLE_PATH, b"last path abandoned", 0, False)
            return
        if 0.0 <= self._discard_prev_at <= now and self._one_rtt is not None:
            self._one_rtt.discard_previous()
            self._discard_prev_at = INF
        for path in list(self._paths.values()):
            rec = path.recovery
            if now >= rec.loss_deadline():
                loss_space = -1
                earliest = INF
                for i in range(3):
                    if rec.spaces[i].loss_time < earliest:
                        earliest = rec.spaces[i].loss_time
                        loss_space = i
                result = rec.on_timeout(now)
                if result == TIMEOUT_LOSS:
                    for p in rec.lost:
                        self._on_packet_lost(loss_space, p, now, path)
                elif result == TIMEOUT_PTO:
                    self._on_pto(rec.pto_space, rec)
            if self._mp and now >= self._path_deadline(path):
                self._on_path_timer(path, now)
        if self._path is not self._home:
            self._enter(self._home)
        if self._nat is not None:
            self._nat.on_timeout(now)
        if (
            self.config.keep_alive > 0.0
            and self._handshake_complete
            and now >= self._keep_alive_at()
        ):
            self._ping_pending = True

    def _path_deadline(self, path: PathState) -> float:
        """The next of a path's own timers: challenge retransmission, keep-alive, idle, drain."""
        if path.abandoned:
            return path.drain_at
        t = INF
        if not path.validated and path.recovery.amplification_budget() >= BASE_MTU:
            t = path.challenge_at
        if path.keep_alive > 0.0 and path.validated and not path.ping_pending:
            k = _path_ping_due(path)
            if k < t:
                t = k
        if path.idle_timeout > 0.0 and self._other_live_path(path):
            floor = 3.0 * path.pto()
            i = path.last_activity + (path.idle_timeout if path.idle_timeout > floor else floor)
            if i < t:
                t = i
        return t

    def _other_live_path(self, path: PathState) -> bool:
        for other in self._paths.values():
            if other is not path and not other.abandoned:
                return True
        return False

    def _on_path_timer(self, path: PathState, now: float) -> None:
        if path.abandoned:
            if now >= path.drain_at:
                self._drain_path(path)
            return
        if path.idle_timeout > 0.0 and self._other_live_path(path):
            floor = 3.0 * path.pto()
            if now >= path.last_activity + (path.idle_timeout if path.idle_timeout > floor else floor):
                self._abandon(path, PATH_UNSTABLE_OR_POOR, now, False)
                return
        if path.keep_alive > 0.0 and path.validated and now >= _path_ping_due(path):
            path.ping_pending = True

    def _keep_alive_at(self) -> float:
        """When the connection's keep-alive PING is due; never while the home path keeps
        itself alive at least as often (multipath keep-alives are per path)."""
        if self._mp and 0.0 < self._home.keep_alive <= self.config.keep_alive:
            return INF
        return _keep_alive_due(self._last_eliciting_sent, self._last_eliciting_received, self.config.keep_alive)

    def _on_pto(self, space_index: int, rec: Recovery) -> None:
        """Probe: resend unacknowledged CRYPTO data of a handshake space. In the application
        space the oldest packet in flight that carried more than PINGs and ACKs has its frames
        sent again in the probes (quinn's rule; RFC 9002 §6.2.4), else the probe is a PING.
        Without it a frame whose ACK the peer sends down a path that died (as the peer's
        PATH_ACKs do until our PATH_ABANDON reaches it) would wait for a loss never seen."""
        if space_index != APPLICATION:
            space = self._spaces[space_index]
            cs = space.crypto_send
            if cs.sent:
                cs.on_frame_lost(0, cs.sent, False)
            return
        for p in rec.spaces[APPLICATION].packets.values():
            frames = cast(SentFrames, p.frames)
            if p.ack_eliciting and p.in_flight and _carries_repairable(frames):
                self._repair(APPLICATION, p)
                # Taken, not copied: the next probe takes the next packet's, and the copies'
                # fate (acked or lost) decides from now on.
                p.frames = [f for f in frames if not _repairable(f[0])]
                return

    # -- sending --------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Datagrams ready now, in order, for a driver that knows one peer address (a
        single-path connection); runs of full-size ones suit GSO."""
        out: list[bytes] = []
        for _, datagrams in self.transmit(now):
            out.extend(datagrams)
        return out

    def transmit(self, now: float) -> list[tuple[object, list[bytes]]]:
        """Datagrams ready now, as (path address, datagrams in order) per path."""
        home = self._home
        if not self._mp:
            datagrams = self._send_on_path(now)
            return [(home.addr, datagrams)] if datagrams else []
        out: list[tuple[object, list[bytes]]] = []
        if self._state >= STATE_CLOSING:
            datagrams = self._send_on_path(now)
            return [(home.addr, datagrams)] if datagrams else []
        self._pacing_at = INF
        for path in list(self._paths.values()):
            if path.abandoned and not (
                path.path_id in self._pending_abandons and path.validated and not self._sendable_path()
            ):
                continue
            if path.path_id not in self._peer_path_cids or not self._peer_path_cids[path.path_id].has_cid():
                continue
            self._enter(path)
            self._data_ok = self._may_send_data(path)
            datagrams = self._send_on_path(now)
            if datagrams:
                out.append((path.addr, datagrams))
            if path.validated and not path.abandoned and self._one_rtt is not None:
                while path.off_path:
                    data, addr = path.off_path.pop(0)
                    out.append((addr, [self._lone_packet(PathResponse(data), self._piggyback(addr, now))]))
                nat = self._nat
                if nat is not None and self._may_send_data(path):
                    while (probe := nat.poll_probe(now)) is not None:
                        out.append((probe.addr, [self._lone_packet(PathChallenge(probe.token), None)]))
        self._data_ok = True
        self._enter(home)
        return out

    def _piggyback(self, addr: object, now: float) -> PathChallenge | None:
        """Client, NAT traversal: a PATH_CHALLENGE to send beside an off-path PATH_RESPONSE
        to ``addr`` where no validated path is (as noq: the peer's probe got through)."""
        nat = self._nat
        if nat is None or not nat.is_client:
            return None
        for p in self._paths.values():
            if p.validated and not p.abandoned and p.addr == addr:
                return None
        remote = _nat_addr(addr)
        if remote is None:
            return None
        token = nat.challenge_with_response(remote, now)
        return PathChallenge(token) if token is not None else None

    def _lone_packet(self, frame: PathChallenge | PathResponse, extra: PathChallenge | None) -> bytes:
        """A 1-RTT packet of the current path holding one frame (and a PATH_CHALLENGE beside
        a PATH_RESPONSE), for another address: it takes a packet number but no congestion
        window and is never retransmitted. A PATH_RESPONSE is padded to 1200 bytes, a lone
        probe is not."""
        keys = cast(OneRttKeys, self._one_rtt)
        sent = self._rec.spaces[APPLICATION]
        pn = sent.next_pn
        pn_length = packet_number_length(pn, sent.largest_acked)
        dcid = self._cur_peer.cid()
        w = Writer(BASE_MTU)
        frame.encode(w)
        if extra is not None:
            extra.encode(w)
        if isinstance(frame, PathResponse):
            w.push_zeros(BASE_MTU - (1 + len(dcid) + pn_length) - TAG_SIZE - w.tell())
        header = build_short_header(dcid, pn, pn_length, keys.key_phase)
        packet = seal_packet(keys.send, keys.send_hp, header, w.getvalue(), pn, self._path.path_id)
        sent.next_pn = pn + 1
        return bytes(packet)

    def _send_on_path(self, now: float) -> list[bytes]:
        """The current path's datagrams."""
        out: list[bytes] = []
        state = self._state
        if not self._initialized or state == STATE_CLOSED or state == STATE_DRAINING:
            return out
        if state == STATE_CLOSING:
            if self._close_pending:
                self._close_pending = False
                # Without a path that has the peer's IDs the close is silent (noq's rule).
                if self._rec.amplification_budget() >= self._path.max_datagram_size and self._cur_peer.has_cid():
                    closing = self._build_close(now)
                    if closing:
                        out.append(closing)
                        self._close_responses += 1
                if self._close_deadline == INF:
                    self._close_deadline = now + 3.0 * self._rec.rtt.pto_base()
            return out
        if not self._mp:
            self._pacing_at = INF
        self._cwnd_limited = False
        if self._discard_prev_at < 0.0:
            self._discard_prev_at = now + 3.0 * self._rec.rtt.pto_base()
        # 1-RTT packets stay bytearrays until _protect_headers has masked the whole burst.
        burst: list[bytes | bytearray] = []
        if self._confirmed and self._path.validated and not self._path.abandoned:
            probe = self._build_mtu_probe(now)
            if probe is not None:
                burst.append(probe)
        self._burst_over = False
        while not self._burst_over:
            datagram = self._build_datagram(now)
            if datagram is None:
                break
            burst.append(datagram)
        if self._hp_pending:
            self._protect_headers()
        self._rec.app_limited = not self._cwnd_limited
        return [bytes(d) for d in burst]

    def _protect_headers(self) -> None:
        """Header protection for the burst's 1-RTT packets: one mask call for all of them."""
        keys = cast(OneRttKeys, self._one_rtt)
        masks = keys.send_hp.masks(b"".join(self._hp_samples))
        m = 0
        for packet, pn_offset, pn_length in self._hp_pending:
            packet[0] ^= masks[m] & 0x1F
            for j in range(pn_length):
                packet[pn_offset + j] ^= masks[m + 1 + j]
            m += MASK_STRIDE
        self._hp_samples.clear()
        self._hp_pending.clear()

    def _build_mtu_probe(self, now: float) -> bytes | None:
        """A PING padded to the size PMTU discovery wants to try, within the window."""
        pmtud = self._pmtud
        size = pmtud.poll_probe(now)
        if size == 0 or self._rec.send_budget() < size:
            return None
        sent = self._rec.spaces[APPLICATION]
        pn = sent.next_pn
        pn_length = packet_number_length(pn, sent.largest_acked)
        payload = bytearray(size - self._header_length(APPLICATION, pn_length) - TAG_SIZE)
        payload[0] = 0x01  # PING, then PADDING
        pmtud.on_probe_sent()
        plan = _Plan(APPLICATION, pn, pn_length, payload, [(K_MTU_PROBE, size, 0, 0)], True, True)
        return self._seal([plan], now, size)

    def _mtu_changed(self, path: PathState) -> None:
        mtu = path.pmtud.mtu
        path.max_datagram_size = mtu
        path.recovery.cc.set_max_datagram_size(mtu)
        path.pacer.max_datagram_size = mtu

    def _has_eliciting_work(self) -> bool:
        path = self._path
        if path.responses or path.ping_pending or self._rec.probes > 0:
            return True
        if not path.validated and path.challenge_at < INF:
            return True
        if not self._data_ok:
            return False
        for space in self._spaces:
            if not space.discarded and space.crypto_send.wants_send():
                return True
        return bool(
            self._send_queue
            or self._datagrams
            or self._ping_pending
            or self._rec.probes > 0
            or self._pending_handshake_done
            or self._pending_max_data
            or self._pending_msd
            or self._pending_max_streams[0]
            or self._pending_max_streams[1]
            or self._pending_new_cids
            or self._pending_retire
            or (self._mp and self._has_path_control())
            or self._qad.wants_send
            or (self._nat is not None and self._nat.has_frames())
        )

    def _has_path_control(self) -> bool:
        if (
            self._pending_max_path_id
            or self._pending_paths_blocked >= 0
            or self._pending_path_cids_blocked
            or self._pending_abandons
        ):
            return True
        for path in self._paths.values():
            if path.status_pending:
                return True
        return False

    def _header_length(self, space: int, pn_length: int) -> int:
        dcid = len(self._cur_peer.cid())
        if space == APPLICATION:
            if self._sends_zero_rtt():
                return 7 + dcid + self._local_cids.length + 2 + pn_length
            return 1 + dcid + pn_length
        # Long header: type, version, DCID, SCID, (token), two-byte Length, PN.
        token = 0
        if space == INITIAL:
            token = len(self._token) + len(encode_varint(len(self._token)))
        return 7 + dcid + self._local_cids.length + token + 2 + pn_length

    def _keys_ready(self, space: int) -> bool:
        if space == APPLICATION:
            if self._handshake_complete:
                return self._one_rtt is not None
            if self.is_client:
                return self._zero_rtt is not None
            return self._half_rtt is not None and self._early_data == EARLY_DATA_ACCEPTED
        return self._spaces[space].send is not None

    def _sends_zero_rtt(self) -> bool:
        """Application data goes in 0-RTT packets: a client before its handshake completed."""
        return self.is_client and not self._handshake_complete

    def _build_datagram(self, now: float) -> bytes | bytearray | None:
        rec = self._rec
        limit = self._pmtud.datagram_size(rec.pto_count) if self._confirmed else BASE_MTU
        amp = rec.amplification_budget()
        if amp < limit:
            limit = amp
        if limit < 64:
            return None
        can_elicit = rec.send_budget() > 0
        if not can_elicit and self._has_eliciting_work():
            self._cwnd_limited = True
        if can_elicit and rec.probes == 0 and self._has_eliciting_work():
            t = self._pacer.next_send_time(now, limit, float(rec.cc.window), rec.rtt.smoothed)
            if t > now:
                if t < self._pacing_at:
                    self._pacing_at = t
                can_elicit = False
        if self._path.path_id != 0 or self._short_only():
            return self._build_short(now, limit, can_elicit)
        plans: list[_Plan] = []
        room = limit
        # A server's ack-eliciting Initial must fill 1200 bytes (RFC 9000 §14.1); until the
        # amplification budget allows that, its Initial packets carry ACKs only.
        initial_elicit = can_elicit and (self.is_client or limit >= MIN_INITIAL_DATAGRAM)
        for space in (INITIAL, HANDSHAKE, APPLICATION):
            if not self._keys_ready(space):
                continue
            plan = self._build_payload(space, room, now, initial_elicit if space == INITIAL else can_elicit)
            if plan is not None:
                plans.append(plan)
                room -= self._header_length(space, plan.pn_length) + len(plan.payload) + TAG_SIZE
        if not plans:
            return None
        return self._seal(plans, now, limit)

    def _short_only(self) -> bool:
        """Only 1-RTT packets are left to send: the handshake spaces are gone."""
        spaces = self._spaces
        return (
            self._handshake_complete
            and self._one_rtt is not None
            and spaces[HANDSHAKE].discarded
            and spaces[INITIAL].discarded
        )

    def _build_short(self, now: float, limit: int, can_elicit: bool) -> bytearray | None:
        """One 1-RTT packet as a datagram: frames go straight into a reused buffer, and header
        protection waits for :meth:`_protect_headers` at the end of the burst."""
        keys = cast(OneRttKeys, self._one_rtt)
        rec = self._rec
        path = self._path
        space = self._spaces[APPLICATION]
        sent_space = rec.spaces[APPLICATION]
        pn = sent_space.next_pn
        pn_length = packet_number_length(pn, sent_space.largest_acked)
        dcid = self._cur_peer.cid()
        header_size = 1 + len(dcid) + pn_length
        capacity = limit - header_size - TAG_SIZE
        if capacity < 32:
            return None
        w = self._send_writer
        if w is None or capacity > w.capacity:
            w = self._send_writer = Writer(max(capacity, self.config.max_datagram_size))
        w.restart(capacity)
        ack = path.ack
        mp = self._mp
        want_ack = False
        has_ack = False
        if ack.received and (path.ack_dirty or ack.wants_ack(now)):
            if not self._write_ack(w, ack, now, path.path_id if mp else -1):
                return None
            want_ack = ack.wants_ack(now)
            has_ack = True
        frames: SentFrames = []
        eliciting = False
        pad = False
        if can_elicit:
            if not path.validated or path.responses:
                pad = self._write_path_frames(w, frames, now)
                eliciting = pad
            if self._data_ok:
                if space.crypto_send.wants_send() and self._write_crypto(space, w, frames):
                    eliciting = True
                if self._write_control(w, frames, now):
                    eliciting = True
                if self._write_streams(w, frames):
                    eliciting = True
            elif path.path_id in self._pending_abandons and self._write_abandons(w, frames):
                eliciting = True
            if not eliciting and (
                (self._ping_pending and self._data_ok)
                or path.ping_pending
                or (rec.probes > 0 and rec.pto_space == APPLICATION)
            ):
                w.push_uint8(0x01)
                frames.append((K_OTHER, 0, 0, 0))
                eliciting = True
                if self._data_ok:
                    self._ping_pending = False
                path.ping_pending = False
        if mp and len(self._paths) > 1:
            # Other paths' ACKs ride along; an abandoned path's go only this way.
            if self._write_other_acks(w, frames, now, not (eliciting or want_ack)):
                want_ack = True
        if not eliciting and not want_ack:
            return None
        # Nothing ack-eliciting went in, yet every ACK fitted: the next packet would be empty.
        self._burst_over = not eliciting and w.remaining() >= _ACK_FRAME_MAX
        if has_ack:
            frames.append((K_ACK, ack.largest, path.path_id, 0))
            ack.on_ack_sent()
            path.ack_dirty = False
        if pad:
            # Path validation datagrams fill the minimum QUIC datagram (RFC 9000 §8.2.1).
            need = BASE_MTU - header_size - TAG_SIZE - w.tell()
            if need > 0:
                w.push_zeros(need if need <= w.remaining() else w.remaining())
        if w.tell() < 4 - pn_length:
            w.push_zeros(4 - pn_length - w.tell())
        first = 0x40 | (keys.key_phase << 2) | (pn_length - 1)
        header = bytes((first,)) + dcid + (pn & ((1 << (8 * pn_length)) - 1)).to_bytes(pn_length, "big")
        packet = bytearray(header)
        packet += keys.send.seal(header, memoryview(w.buffer)[: w.tell()], pn, path.path_id)
        pn_offset = header_size - pn_length
        self._hp_samples.append(bytes(packet[pn_offset + 4 : pn_offset + 4 + SAMPLE_SIZE]))
        self._hp_pending.append((packet, pn_offset, pn_length))
        size = len(packet)
        rec.on_packet_sent(APPLICATION, SentPacket(pn, now, size, eliciting, eliciting, frames))
        rec.on_datagram_sent(size)
        if eliciting:
            self._pacer.on_sent(size)
            self._last_eliciting_sent = now
            path.last_eliciting = now
            if not self._idle_restarted:
                self._idle_restarted = True
                self._last_activity = now
        return packet

    def _seal(self, plans: list[_Plan], now: float, limit: int) -> bytes:
        """Pad, protect and record the packets of one datagram."""
        total = 0
        pad_initial = False
        for plan in plans:
            if len(plan.payload) < 4 - plan.pn_length:
                plan.payload += bytes(4 - plan.pn_length - len(plan.payload))
            total += self._header_length(plan.space, plan.pn_length) + len(plan.payload) + TAG_SIZE
            if plan.space == INITIAL and (self.is_client or plan.eliciting):
                pad_initial = True
        padded = False
        if pad_initial and total < MIN_INITIAL_DATAGRAM and limit >= MIN_INITIAL_DATAGRAM:
            plans[-1].payload += bytes(MIN_INITIAL_DATAGRAM - total)
            padded = True
        parts: list[bytearray] = []
        dcid = self._cur_peer.cid()
        path_id = self._path.path_id
        scid = self._local_cids.cids()[0]
        rec = self._rec
        eliciting_any = False
        for i, plan in enumerate(plans):
            space = plan.space
            pn = plan.pn
            pn_length = plan.pn_length
            payload = bytes(plan.payload)
            if space == APPLICATION:
                keys = self._one_rtt
                if keys is not None and self._handshake_complete:
                    header = build_short_header(dcid, pn, pn_length, keys.key_phase)
                    parts.append(seal_packet(keys.send, keys.send_hp, header, payload, pn, path_id))
                elif self.is_client:
                    zero = cast(Protection, self._zero_rtt)
                    header = self._long_header(PACKET_ZERO_RTT, dcid, scid, pn, pn_length, len(payload))
                    parts.append(seal_packet(zero.key, zero.hp, header, payload, pn))
                    self._zero_rtt_pns.append(pn)
                else:
                    half = cast(Protection, self._half_rtt)
                    header = build_short_header(dcid, pn, pn_length, 0)
                    parts.append(seal_packet(half.key, half.hp, header, payload, pn))
            else:
                prot = cast(Protection, self._spaces[space].send)
                packet_type = PACKET_INITIAL if space == INITIAL else PACKET_HANDSHAKE
                header = self._long_header(packet_type, dcid, scid, pn, pn_length, len(payload))
                parts.append(seal_packet(prot.key, prot.hp, header, payload, pn))
            size = len(parts[-1])
            in_flight = plan.eliciting or (padded and i == len(plans) - 1)
            rec.on_packet_sent(
                space, SentPacket(pn, now, size, plan.eliciting, in_flight, plan.frames, plan.mtu_probe)
            )
            if plan.eliciting:
                eliciting_any = True
        datagram = b"".join(parts)
        rec.on_datagram_sent(len(datagram))
        if eliciting_any:
            self._pacer.on_sent(len(datagram))
            self._last_eliciting_sent = now
            self._path.last_eliciting = now
            if not self._idle_restarted:
                self._idle_restarted = True
                self._last_activity = now
        if self.is_client and not self._spaces[INITIAL].discarded:
            for plan in plans:
                if plan.space == HANDSHAKE:
                    # RFC 9001 §4.9.1: a client drops Initial keys once it sends a Handshake packet.
                    self._discard_space(INITIAL)
                    break
        return datagram

    def _long_header(self, packet_type: int, dcid: bytes, scid: bytes, pn: int, pn_length: int, size: int) -> bytes:
        """A long header with a two-byte Length, as :meth:`_header_length` counts it."""
        return b"".join(
            [
                bytes((0xC0 | (packet_type << 4) | (pn_length - 1),)),
                VERSION_1.to_bytes(4, "big"),
                bytes((len(dcid),)),
                dcid,
                bytes((len(scid),)),
                scid,
                encode_varint(len(self._token)) + self._token if packet_type == PACKET_INITIAL else b"",
                (0x4000 | (pn_length + size + TAG_SIZE)).to_bytes(2, "big"),
                (pn & ((1 << (8 * pn_length)) - 1)).to_bytes(pn_length, "big"),
            ]
        )

    def _ack_bytes(self, ack: AckTracker, index: int, now: float, path_id: int = -1) -> bytes:
        """An ACK frame, or PATH_ACK of ``path_id`` (multipath acknowledges every path's
        application data with PATH_ACK, as noq does)."""
        w = Writer(_ACK_FRAME_MAX)
        self._push_ack(w, ack, index, now, path_id)
        return w.getvalue()

    def _write_ack(self, w: Writer, ack: AckTracker, now: float, path_id: int) -> bool:
        """An application-space ACK (PATH_ACK with a ``path_id``) into ``w`` if it fits: straight
        in when ``_ACK_FRAME_MAX`` bytes are free, else built aside and measured first."""
        if w.remaining() >= _ACK_FRAME_MAX:
            self._push_ack(w, ack, APPLICATION, now, path_id)
            return True
        data = self._ack_bytes(ack, APPLICATION, now, path_id)
        if len(data) > w.remaining():
            return False
        w.push_bytes(data)
        return True

    def _push_ack(self, w: Writer, ack: AckTracker, index: int, now: float, path_id: int) -> None:
        """:meth:`_ack_bytes` written into ``w``, which has ``_ACK_FRAME_MAX`` bytes of room."""
        ranges = ack.ranges()
        if len(ranges) > MAX_ACK_FRAME_RANGES:
            ranges = ranges[:MAX_ACK_FRAME_RANGES]
        delay = int(ack.ack_delay(now) * 1e6) >> ACK_DELAY_EXPONENT if index == APPLICATION else 0
        ecn = (ack.ect0, ack.ect1, ack.ce) if ack.ect0 or ack.ect1 or ack.ce else None
        push_ack(w, ranges, delay, ecn, path_id if path_id >= 0 else None)

    def _write_other_acks(self, w: Writer, frames: SentFrames, now: float, due_only: bool) -> bool:
        """PATH_ACKs of the other paths with news; with ``due_only``, only those of abandoned
        paths whose ACK is due (no packet of theirs carries it)."""
        wrote = False
        current = self._path
        for other in self._paths.values():
            ack = other.ack
            if other is current or not ack.received or not other.ack_dirty:
                continue
            if due_only and not (other.abandoned and ack.wants_ack(now)):
                continue
            if not self._write_ack(w, ack, now, other.path_id):
                break
            frames.append((K_ACK, ack.largest, other.path_id, 0))
            ack.on_ack_sent()
            other.ack_dirty = False
            wrote = True
        return wrote

    def _write_path_frames(self, w: Writer, frames: SentFrames, now: float) -> bool:
        """The current path's PATH_CHALLENGE (when due) and PATH_RESPONSEs; returns whether
        any went in (the datagram is then padded)."""
        path = self._path
        wrote = False
        if not path.validated and not path.abandoned and now >= path.challenge_at and w.remaining() >= 9:
            data = os.urandom(8)
            challenges = path.challenges
            challenges.append(data)
            if len(challenges) > MAX_CHALLENGES:
                del challenges[0]
            PathChallenge(data).encode(w)
            frames.append((K_OTHER, 0, 0, 0))
            backoff = path.recovery.rtt.pto_base() * (1 << min(path.challenges_lost, 16))
            path.challenge_at = now + (backoff if backoff < MAX_CHALLENGE_INTERVAL else MAX_CHALLENGE_INTERVAL)
            path.challenges_lost += 1
            wrote = True
        responses = path.responses
        while responses and w.remaining() >= 9:
            PathResponse(responses.pop(0)).encode(w)
            frames.append((K_OTHER, 0, 0, 0))
            wrote = True
        return wrote

    def _write_abandons(self, w: Writer, frames: SentFrames) -> bool:
        pending = self._pending_abandons
        wrote = False
        while pending and w.remaining() >= _CONTROL_ROOM:
            pid = next(iter(pending))
            code = pending.pop(pid)
            PathAbandon(pid, code).encode(w)
            frames.append((K_PATH_ABANDON, pid, code, 0))
            wrote = True
        return wrote

    def _write_path_control(self, w: Writer, frames: SentFrames) -> bool:
        """PATH_ABANDON, PATH_STATUS_*, MAX_PATH_ID, PATHS_BLOCKED, PATH_CIDS_BLOCKED."""
        wrote = self._write_abandons(w, frames)
        for path in self._paths.values():
            if path.status_pending and w.remaining() >= _CONTROL_ROOM:
                PathStatus(path.path_id, path.status_seq, path.status == STATUS_AVAILABLE).encode(w)
                frames.append((K_PATH_STATUS, path.path_id, path.status_seq, 0))
                path.status_pending = False
                wrote = True
        if self._pending_max_path_id and w.remaining() >= _CONTROL_ROOM:
            MaxPathId(self._local_max_path_id).encode(w)
            frames.append((K_MAX_PATH_ID, self._local_max_path_id, 0, 0))
            self._pending_max_path_id = False
            wrote = True
        if self._pending_paths_blocked >= 0 and w.remaining() >= _CONTROL_ROOM:
            PathsBlocked(self._pending_paths_blocked).encode(w)
            frames.append((K_OTHER, 0, 0, 0))
            self._pending_paths_blocked = -1
            wrote = True
        while self._pending_path_cids_blocked and w.remaining() >= _CONTROL_ROOM:
            pid = next(iter(self._pending_path_cids_blocked))
            PathCidsBlocked(pid, self._pending_path_cids_blocked.pop(pid)).encode(w)
            frames.append((K_OTHER, 0, 0, 0))
            wrote = True
        return wrote

    def _build_payload(self, index: int, budget: int, now: float, can_elicit: bool) -> _Plan | None:
        space = self._spaces[index]
        sent_space = self._rec.spaces[index]
        pn = sent_space.next_pn
        pn_length = packet_number_length(pn, sent_space.largest_acked)
        capacity = budget - self._header_length(index, pn_length) - TAG_SIZE
        if capacity < 32:
            return None
        app = index == APPLICATION
        ack = self._path.ack if app else space.ack
        dirty = self._path.ack_dirty if app else space.ack_dirty
        ack_bytes = b""
        want_ack = False
        if ack.received and (dirty or ack.wants_ack(now)):
            ack_bytes = self._ack_bytes(ack, index, now)
            want_ack = ack.wants_ack(now)
            if len(ack_bytes) >= capacity:
                return None
        w = Writer(capacity - len(ack_bytes))
        frames: SentFrames = []
        eliciting = False
        if index == APPLICATION and self._sends_zero_rtt():
            # 0-RTT carries no ACK, CRYPTO or connection-ID frames (RFC 9000 §12.4).
            ack_bytes = b""
            w = Writer(capacity)
            if can_elicit:
                eliciting = self._write_streams(w, frames)
                if self._write_datagrams(w, frames):
                    eliciting = True
                if not eliciting and self._ping_pending:
                    w.push_uint8(0x01)
                    frames.append((K_OTHER, 0, 0, 0))
                    eliciting = True
                    self._ping_pending = False
        elif can_elicit:
            eliciting = self._write_crypto(space, w, frames)
            if index == APPLICATION:
                if self._path.responses and self._write_path_frames(w, frames, now):
                    eliciting = True
                if self._write_control(w, frames, now):
                    eliciting = True
                if self._write_streams(w, frames):
                    eliciting = True
            rec = self._rec
            if not eliciting and (
                (index == APPLICATION and self._ping_pending) or (rec.probes > 0 and rec.pto_space == index)
            ):
                w.push_uint8(0x01)
                frames.append((K_OTHER, 0, 0, 0))
                eliciting = True
                if index == APPLICATION:
                    self._ping_pending = False
        if ack_bytes and (want_ack or eliciting):
            ack_largest = ack.largest
            ack.on_ack_sent()
            if app:
                self._path.ack_dirty = False
            else:
                space.ack_dirty = False
            frames.append((K_ACK, ack_largest, self._path.path_id, 0))
            payload = bytearray(ack_bytes)
            payload += w.buffer[: w.tell()]
        elif eliciting:
            payload = bytearray(w.buffer[: w.tell()])
        else:
            return None
        return _Plan(index, pn, pn_length, payload, frames, eliciting)

    def _write_crypto(self, space: PacketSpace, w: Writer, frames: SentFrames) -> bool:
        cs = space.crypto_send
        wrote = False
        while cs.wants_send():
            room = w.remaining() - 12
            if room <= 0:
                break
            item = cs.next_frame(room, space.crypto_credit)
            if item is None:
                break
            offset, data, _ = item
            w.push_uint8(FRAME_CRYPTO)
            w.push_varint(offset)
            w.push_varint(len(data))
            w.push_bytes(bytes(data))
            frames.append((K_CRYPTO, offset, len(data), 0))
            wrote = True
        return wrote

    def _write_control(self, w: Writer, frames: SentFrames, now: float) -> bool:
        """Flow-control credit, connection IDs, HANDSHAKE_DONE, PATH_RESPONSE, *_BLOCKED."""
        wrote = False
        streams = self._streams
        if self._pending_handshake_done and w.remaining() >= 1:
            HandshakeDone().encode(w)
            frames.append((K_HANDSHAKE_DONE, 0, 0, 0))
            self._pending_handshake_done = False
            wrote = True
        if w.remaining() >= _CONTROL_ROOM:
            limit = streams.max_data_frame(now, self._rec.rtt.smoothed)
            if limit >= 0 or self._pending_max_data:
                limit = streams.conn_recv.limit
                MaxData(limit).encode(w)
                frames.append((K_MAX_DATA, limit, 0, 0))
                self._pending_max_data = False
                wrote = True
        for d in (0, 1):
            if self._pending_max_streams[d] and w.remaining() >= _CONTROL_ROOM:
                limit = streams.peer_limit_sent[d]
                MaxStreams(d == 0, limit).encode(w)
                frames.append((K_MAX_STREAMS, d, limit, 0))
                self._pending_max_streams[d] = False
                wrote = True
            blocked = self._pending_streams_blocked[d]
            if blocked >= 0 and w.remaining() >= _CONTROL_ROOM:
                StreamsBlocked(d == 0, blocked).encode(w)
                frames.append((K_OTHER, 0, 0, 0))
                self._pending_streams_blocked[d] = -1
                wrote = True
        while self._pending_msd and w.remaining() >= _CONTROL_ROOM:
            sid = next(iter(self._pending_msd))
            del self._pending_msd[sid]
            rs = streams.recv.get(sid)
            if rs is None or rs.final_size >= 0:
                continue
            MaxStreamData(sid, rs.window.limit).encode(w)
            frames.append((K_MAX_STREAM_DATA, sid, rs.window.limit, 0))
            wrote = True
        while self._pending_new_cids and w.remaining() >= _CONTROL_ROOM:
            pid, seq = self._pending_new_cids.pop(0)
            local = self._local_path_cids.get(pid)
            entry = local.active.get(seq) if local is not None else None
            if local is None or entry is None:
                continue
            NewConnectionId(seq, local.retire_prior_to, entry[0], entry[1], pid if pid else None).encode(w)
            frames.append((K_NEW_CID, seq, pid, 0))
            wrote = True
        while self._pending_retire and w.remaining() >= _CONTROL_ROOM:
            pid, seq = self._pending_retire.pop(0)
            RetireConnectionId(seq, pid if pid else None).encode(w)
            frames.append((K_RETIRE_CID, seq, pid, 0))
            wrote = True
        if self._mp and self._write_path_control(w, frames):
            wrote = True
        if self._qad.wants_send and w.remaining() >= _CONTROL_ROOM:
            observed = self._qad.take_frame()
            if observed is not None:
                observed.encode(w)
                frames.append((K_OBSERVED_ADDRESS, 0, 0, 0))
                wrote = True
        nat = self._nat
        while nat is not None and w.remaining() >= _NAT_FRAME_ROOM:
            nat_frame = nat.pop_frame()
            if nat_frame is None:
                break
            nat_frame.encode(w)
            key = self._nat_next_key
            self._nat_next_key = key + 1
            self._nat_sent[key] = nat_frame
            frames.append((K_NAT, key, 0, 0))
            wrote = True
        if w.remaining() >= _CONTROL_ROOM:
            blocked = streams.conn_send.blocked_frame()
            if blocked >= 0:
                DataBlocked(blocked).encode(w)
                frames.append((K_OTHER, 0, 0, 0))
                wrote = True
        if self._write_datagrams(w, frames):
            wrote = True
        return wrote

    def _write_datagrams(self, w: Writer, frames: SentFrames) -> bool:
        wrote = False
        while self._datagrams:
            data = self._datagrams[0]
            size = 1 + (1 if len(data) < 64 else 2) + len(data)
            if size > w.remaining():
                break
            self._datagrams.popleft()
            w.push_uint8(FRAME_DATAGRAM_LEN)
            w.push_varint(len(data))
            w.push_bytes(data)
            frames.append((K_OTHER, 0, 0, 0))
            wrote = True
        return wrote

    def _write_streams(self, w: Writer, frames: SentFrames) -> bool:
        """STOP_SENDING, RESET_STREAM and STREAM frames, round-robin over streams with work."""
        queue = self._send_queue
        if not queue:
            return False
        streams = self._streams
        conn = streams.conn_send
        wrote = False
        for sid in list(queue):
            if w.remaining() < _CONTROL_ROOM:
                break
            rs = streams.recv.get(sid)
            if rs is not None:
                code = rs.take_stop_sending()
                if code >= 0:
                    StopSending(sid, code).encode(w)
                    frames.append((K_STOP, sid, 0, 0))
                    wrote = True
            ss = streams.send.get(sid)
            if ss is not None:
                reset = ss.take_reset()
                if reset is not None:
                    ResetStream(sid, reset[0], reset[1]).encode(w)
                    frames.append((K_RESET, sid, 0, 0))
                    wrote = True
                while ss.sendable(conn):
                    offset = ss.retx.start if ss.retx else ss.sent
                    room = w.remaining() - stream_header_size(sid, offset, 16383)
                    if room <= 0:
                        break
                    item = ss.next_frame(room if room < 16383 else 16383, conn)
                    if item is None:
                        break
                    offset, data, fin = item
                    push_stream_header(w, sid, offset, len(data), fin)
                    w.push_bytes(bytes(data))
                    frames.append((K_STREAM, sid, offset, len(data) * 2 + (1 if fin else 0)))
                    wrote = True
                blocked = ss.blocked_frame()
                if blocked >= 0 and w.remaining() >= _CONTROL_ROOM:
                    StreamDataBlocked(sid, blocked).encode(w)
                    frames.append((K_OTHER, 0, 0, 0))
                    wrote = True
            del queue[sid]
            if ss is not None:
                if ss.sendable(conn):
                    queue[sid] = None  # more to send: back of the line
                elif ss.reset_code < 0 and ss.sent < ss.written and ss.sent < ss.max_data:
                    self._conn_blocked[sid] = None  # waits for MAX_DATA
        return wrote

    def _build_close(self, now: float) -> bytes:
        error_code, reason, frame_type, application = self._close
        plans: list[_Plan] = []
        for index in (INITIAL, HANDSHAKE, APPLICATION):
            if not self._keys_ready(index):
                continue
            w = Writer(64 + len(reason))
            if index == APPLICATION or not application:
                ConnectionClose(error_code, reason, frame_type, application).encode(w)
            else:
                # Before 1-RTT an application close is sent as a transport APPLICATION_ERROR.
                ConnectionClose(QuicError.APPLICATION_ERROR, b"", 0, False).encode(w)
            sent_space = self._rec.spaces[index]
            pn = sent_space.next_pn
            plans.append(
                _Plan(index, pn, packet_number_length(pn, sent_space.largest_acked), bytearray(w.getvalue()), [], False)
            )
        if not plans:
            return b""
        return self._seal(plans, now, BASE_MTU)


def _keep_alive_due(last_sent: float, last_received: float, interval: float) -> float:
    """``interval`` after our last ack-eliciting packet, or 1.5 ``interval`` after the peer's
    when that came later: the side that pinged last keeps pinging and the other only
    acknowledges, so one PING and its ACK per interval keep both NAT mappings, not two PINGs
    that cross."""
    if last_received > last_sent:
        return last_received + 1.5 * interval
    return last_sent + interval


def _path_ping_due(path: PathState) -> float:
    """When a path's keep-alive PING is due: :func:`_keep_alive_due`'s rule per path, where
    every packet that arrives on the path counts as keeping it alive from our side (the peer's
    ACKs may travel on other paths, so each side keeps each of its paths alive itself)."""
    last = path.last_activity if path.last_activity > path.last_eliciting else path.last_eliciting
    if path.peer_eliciting > path.last_eliciting:
        # The peer pinged last: it keeps pinging and we only acknowledge, unless it stops.
        return path.peer_eliciting + 1.5 * path.keep_alive
    return last + path.keep_alive


#: Frames a packet may hold without being more than a probe (RFC 9000 §9.1).
_PROBING_FRAMES = (PathChallenge, PathResponse, NewConnectionId, Padding)


def _nat_addr(addr: object) -> IpPort | None:
    """A driver's ``(host, port, ...)`` address in the NAT-traversal core's form, or None."""
    if isinstance(addr, tuple) and len(addr) >= 2 and isinstance(addr[0], str) and isinstance(addr[1], int):
        try:
            return canonical(addr[0], addr[1])
        except InvalidAddr:
            return None
    return None
