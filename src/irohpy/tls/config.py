"""QuicConfiguration for iroh: raw-public-key TLS material plus iroh's QUIC settings."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

from aioquic.quic.configuration import QuicConfiguration
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irohpy.errors import TlsError
from irohpy.tls.keys import private_key, public_key_bytes
from irohpy.tls.name import server_name
from irohpy.tls.spki import SpkiCertificate

# iroh's transport settings (wire spec §3.2) wherever aioquic has a knob for them.
IDLE_TIMEOUT = 30.0
MAX_DATAGRAM_FRAME_SIZE = 65535
STREAM_RECEIVE_WINDOW = 1_250_000
CONNECTION_RECEIVE_WINDOW = (1 << 62) - 1  # VarInt::MAX: iroh does not limit the connection
CONGESTION_CONTROL = "cubic"
CONNECTION_ID_LENGTH = 8
MAX_ALPN_LENGTH = 255


def alpn_text(alpn: bytes | str) -> str:
    """One ALPN as the ``str`` aioquic expects.

    aioquic encodes and decodes ALPNs as ASCII (and skips non-ASCII ones a peer offers), so an
    ALPN with other bytes cannot be used with it and is refused here rather than later.
    """
    if not alpn.isascii():
        raise TlsError(f"ALPN {alpn!r} is not ASCII; aioquic only supports ASCII ALPNs")
    text = alpn.decode("ascii") if isinstance(alpn, bytes | bytearray) else alpn
    if not 1 <= len(text) <= MAX_ALPN_LENGTH:
        raise TlsError(f"an ALPN has 1 to {MAX_ALPN_LENGTH} bytes, got {len(text)}")
    return text


def quic_configuration(
    secret_key: bytes | Ed25519PrivateKey,
    *,
    is_client: bool,
    alpns: Sequence[bytes | str],
    expected_peer: bytes | None = None,
    **overrides: Any,
) -> QuicConfiguration:
    """A QuicConfiguration for one side of an iroh connection.

    ``secret_key`` is the 32-byte Ed25519 seed (iroh's SecretKey) or the key itself. A client
    needs ``expected_peer`` (servers ignore it), the EndpointId it dials: it becomes the TLS server name
    ``<base32hex(id)>.iroh.invalid``, which also keys aioquic's session-ticket matching. ALPNs
    may be ``bytes`` or ``str`` but must be ASCII (aioquic's limit). ``overrides`` are passed to
    ``QuicConfiguration`` and win over everything set here.

    Pass the result to :class:`IrohQuicConnection`, which enforces iroh's TLS rules.
    """
    if isinstance(alpns, bytes | bytearray | str):
        raise TlsError("alpns is a list of ALPNs, not a single one")
    key = private_key(secret_key)
    settings: dict[str, Any] = {
        "is_client": is_client,
        "alpn_protocols": [alpn_text(a) for a in alpns],
        "certificate": SpkiCertificate(public_key_bytes(key)),
        "private_key": key,
        "verify_mode": ssl.CERT_NONE,
        "idle_timeout": IDLE_TIMEOUT,
        "max_datagram_frame_size": MAX_DATAGRAM_FRAME_SIZE,
        "max_stream_data": STREAM_RECEIVE_WINDOW,
        "max_data": CONNECTION_RECEIVE_WINDOW,
        "congestion_control_algorithm": CONGESTION_CONTROL,
        "connection_id_length": CONNECTION_ID_LENGTH,
    }
    if is_client:
        if expected_peer is None:
            raise TlsError("a client configuration needs expected_peer, the EndpointId it dials")
        settings["server_name"] = server_name(expected_peer)
    settings.update(overrides)
    return QuicConfiguration(**settings)
