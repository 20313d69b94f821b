"""The errors irohpy raises.

Every parser and every network call raises a subclass of :class:`IrohError`,
so callers can catch one type at the boundary and still tell cases apart.
"""

from __future__ import annotations

from typing import Final


class IrohError(Exception):
    """Base of every error irohpy raises on purpose."""


# -- base: parsing and encoding ---------------------------------------------


class DecodeError(IrohError, ValueError):
    """Bytes or text that do not decode to the expected value."""


class InvalidKey(DecodeError):
    """A key or signature that is malformed, of the wrong length, or not on the curve."""


class InvalidSignature(IrohError):
    """A well-formed signature that does not verify."""


class KeyFileError(IrohError):
    """A key file that is missing, unreadable, or does not hold a key."""


class InvalidRelayUrl(DecodeError):
    """A relay URL that is not an absolute http(s) URL."""


class InvalidAddr(DecodeError):
    """A transport address that cannot be parsed."""


class TicketError(DecodeError):
    """A ticket string with the wrong kind, bad base32, or a bad payload."""


# -- tls ----------------------------------------------------------------------


class TlsError(IrohError):
    """A TLS name, key, ALPN or configuration that iroh's raw-public-key TLS cannot use."""


# -- quic wire ----------------------------------------------------------------


class QuicError(IrohError):
    """A QUIC protocol error; ``error_code`` is the RFC 9000 transport error code to close with.

    ``frame_type`` names the frame that caused it (0 when none), as CONNECTION_CLOSE carries it.
    """

    NO_ERROR: Final = 0x00
    INTERNAL_ERROR: Final = 0x01
    CONNECTION_REFUSED: Final = 0x02
    FLOW_CONTROL_ERROR: Final = 0x03
    STREAM_LIMIT_ERROR: Final = 0x04
    STREAM_STATE_ERROR: Final = 0x05
    FINAL_SIZE_ERROR: Final = 0x06
    FRAME_ENCODING_ERROR: Final = 0x07
    TRANSPORT_PARAMETER_ERROR: Final = 0x08
    CONNECTION_ID_LIMIT_ERROR: Final = 0x09
    PROTOCOL_VIOLATION: Final = 0x0A
    INVALID_TOKEN: Final = 0x0B
    APPLICATION_ERROR: Final = 0x0C
    CRYPTO_BUFFER_EXCEEDED: Final = 0x0D
    KEY_UPDATE_ERROR: Final = 0x0E
    AEAD_LIMIT_REACHED: Final = 0x0F
    NO_VIABLE_PATH: Final = 0x10
    CRYPTO_ERROR: Final = 0x100

    def __init__(self, message: str, *, error_code: int = 0x0A, frame_type: int = 0) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.frame_type = frame_type


class PathError(IrohError):
    """A multipath request the connection cannot honour now; ``kind`` says why:
    not-negotiated, server, paths-blocked, cids-blocked, closed-path or last-path."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class QuicDecodeError(QuicError, DecodeError):
    """QUIC bytes (varint, packet header, frame, transport parameters) that do not decode.

    Frame errors default to FRAME_ENCODING_ERROR; a frame that is well formed but not allowed
    where it arrived carries PROTOCOL_VIOLATION, transport parameters TRANSPORT_PARAMETER_ERROR.
    """

    def __init__(self, message: str, *, error_code: int = 0x07, frame_type: int = 0) -> None:
        super().__init__(message, error_code=error_code, frame_type=frame_type)


class TlsDecodeError(QuicError, DecodeError):
    """A TLS handshake message that does not decode: closes with 0x100 + decode_error (50)."""

    def __init__(self, message: str, *, error_code: int = 0x132) -> None:
        super().__init__(message, error_code=error_code)


class QuicDecryptError(QuicDecodeError):
    """A packet that fails AEAD authentication: dropped, never a reason to close (RFC 9001 §5.5)."""


# -- nat traversal ------------------------------------------------------------


class NatTraversalError(IrohError):
    """A NAT-traversal request the connection cannot carry out (n0's in-QUIC traversal).

    ``transient`` is true when trying again soon may work (no local candidates yet); a round on
    a server connection, one without the extension, or past the address limit stays refused.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# -- endpoint, connections, streams -----------------------------------------


class EndpointClosed(IrohError):
    """The endpoint (or router) was closed; it accepts no more calls."""


class BindError(IrohError, OSError):
    """A socket could not be bound."""


class ConnectError(IrohError):
    """Dialing failed before a connection was established."""


class LocallyRejected(ConnectError):
    """An endpoint hook rejected the connection on this side."""


class ConnectTimeout(ConnectError, TimeoutError):
    """The handshake did not finish in time."""


class ConnectionLost(IrohError):
    """A connection ended; says who ended it and why."""

    def __init__(self, message: str, *, error_code: int = 0, reason: bytes = b"") -> None:
        super().__init__(message)
        self.error_code = error_code
        self.reason = reason


class ApplicationClosed(ConnectionLost):
    """The peer closed the connection with an application error code."""


class LocallyClosed(ConnectionLost):
    """This side closed the connection."""


class TransportError(ConnectionLost):
    """A QUIC transport or TLS error (QUIC error code, e.g. 0x100 + TLS alert)."""


class IdleTimeout(ConnectionLost, TimeoutError):
    """Nothing was heard from the peer for the idle timeout."""


class StreamError(IrohError):
    """A stream operation failed."""


class StreamReset(StreamError):
    """The peer reset the stream it was sending."""

    def __init__(self, message: str, *, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class StreamStopped(StreamError):
    """The peer asked us to stop sending on this stream."""

    def __init__(self, message: str, *, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class ReadError(StreamError):
    """A read could not be satisfied: early end of stream, or over the limit."""


class DatagramError(IrohError):
    """A datagram could not be sent: unsupported by the peer, or too large."""


class QuicPacketError(DecodeError):
    """A QUIC packet the endpoint will not act on: an Initial that does not decrypt, a bad Retry token."""


# -- relay --------------------------------------------------------------------


class RelayProtocolError(DecodeError):
    """A relay frame or handshake message that breaks the iroh-relay protocol."""


class RelayAuthError(IrohError):
    """The relay refused us (or we refused a client) at the handshake."""


class RelayError(IrohError):
    """A relay connection failed or was lost."""


class InvalidToken(RelayAuthError):
    """A relay access token that is malformed, forged, revoked, expired or meant for another endpoint.

    ``kind`` names the failure in one word for metrics and logs; the message is for people.
    """

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class ConfigError(IrohError, ValueError):
    """A server configuration (file or options) that cannot be read or does not make sense."""


# -- lookup -------------------------------------------------------------------


class StunError(DecodeError):
    """A STUN message that is not a well-formed binding request or response."""


class MdnsError(DecodeError):
    """An mDNS datagram that is not a DNS message."""


class PkarrError(DecodeError):
    """A pkarr signed packet or ``_iroh`` TXT record set that breaks the format or its limits."""


class DnsServerError(IrohError):
    """The DNS server could not start, e.g. because its database cannot be opened."""


class BencodeError(DecodeError):
    """Bytes that are not one strict bencoded value (or exceed the depth and size limits)."""


class KrpcError(DecodeError):
    """A bencoded value that is not a well-formed Mainline DHT (KRPC) message."""


class DhtError(IrohError):
    """A DHT query or BEP 44 store failed: error reply, timeout, or refused item.

    ``code`` is the KRPC error code (BEP 5 / BEP 44, e.g. 206 invalid signature, 302 seq too
    low), or 0 for failures with no code such as timeouts.
    """

    def __init__(self, message: str, *, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class GossipError(DecodeError):
    """A gossip frame or message that is malformed, oversized, or has an unknown variant."""


# -- lab ----------------------------------------------------------------------


class LabError(IrohError):
    """The NAT lab could not be built, entered or driven (needs Linux, root, iproute2, nftables)."""


# -- blobs --------------------------------------------------------------------


class BaoError(DecodeError):
    """Bao-tree data, outboards or chunk ranges that are malformed or do not verify."""


class BlobRequestError(DecodeError):
    """A blobs request (iroh-bytes/4) that is malformed, unsupported, or over the limits."""


class BlobsError(IrohError):
    """A blob transfer failed: no provider had the data, every provider failed, or a provider refused."""


class PortMapError(DecodeError):
    """A NAT-PMP, PCP, SSDP or UPnP (description, SOAP) answer that does not parse or is too large."""


class PortMapRefused(IrohError):
    """A gateway understood a port-mapping request and said no; ``code`` is its result or UPnP error code."""

    def __init__(self, message: str, *, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class DoctorError(IrohError):
    """``irohpy doctor`` could not do what was asked (a bad record file, no relay to test against)."""


# -- docs ---------------------------------------------------------------------


class DocsError(IrohError):
    """A documents operation failed: unknown or closed document, read-only replica, store failure."""


class SyncError(DecodeError):
    """An iroh-sync message that is malformed, oversized, out of order, or carries an invalid entry."""


class EntryRejected(DocsError):
    """An entry was refused: bad signature, wrong namespace, timestamp too far ahead, or a newer entry exists."""
