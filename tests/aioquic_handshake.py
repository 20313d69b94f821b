"""aioquic's sans-IO ``tls.Context`` behind the engine's Handshake Protocol, for tests and bench.

The engine's own handshake is :func:`irohpy.quic.handshake.iroh_handshake` (irohpy's TLS).
This adapter lets a QUIC connection of ours run aioquic's TLS instead: plain X.509 against an
aioquic peer, or :class:`~irohpy.tls.context.IrohTlsContext` with raw public keys
(:func:`aioquic_iroh_handshake`, the engine's handshake before it had its own TLS; bench
compares the two). It never runs in irohpy itself, so aioquic stays a test dependency of the engine.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Final

from aioquic import tls
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irohpy.errors import QuicError
from irohpy.quic.handshake import QUIC_TRANSPORT_PARAMETERS, check_iroh_args
from irohpy.tls.config import alpn_text
from irohpy.tls.context import IrohTlsContext
from irohpy.tls.keys import private_key
from irohpy.tls.name import server_name

EPOCH_INITIAL: Final = 0
EPOCH_HANDSHAKE: Final = 2
EPOCH_ONE_RTT: Final = 3

_BUFFER_CAPACITY: Final = 65536
#: A TLS handshake message larger than this is refused (iroh's certificates are tiny).
MAX_MESSAGE: Final = 65536

# The encryption level each TLS state must receive its next message at (RFC 9001 §4.1.3).
_EXPECTED_EPOCH: Final[dict[tls.State, int]] = {
    tls.State.CLIENT_EXPECT_SERVER_HELLO: EPOCH_INITIAL,
    tls.State.CLIENT_EXPECT_ENCRYPTED_EXTENSIONS: EPOCH_HANDSHAKE,
    tls.State.CLIENT_EXPECT_CERTIFICATE_REQUEST_OR_CERTIFICATE: EPOCH_HANDSHAKE,
    tls.State.CLIENT_EXPECT_CERTIFICATE: EPOCH_HANDSHAKE,
    tls.State.CLIENT_EXPECT_CERTIFICATE_VERIFY: EPOCH_HANDSHAKE,
    tls.State.CLIENT_EXPECT_FINISHED: EPOCH_HANDSHAKE,
    tls.State.CLIENT_POST_HANDSHAKE: EPOCH_ONE_RTT,
    tls.State.SERVER_EXPECT_CLIENT_HELLO: EPOCH_INITIAL,
    tls.State.SERVER_EXPECT_CERTIFICATE: EPOCH_HANDSHAKE,
    tls.State.SERVER_EXPECT_CERTIFICATE_VERIFY: EPOCH_HANDSHAKE,
    tls.State.SERVER_EXPECT_FINISHED: EPOCH_HANDSHAKE,
    tls.State.SERVER_POST_HANDSHAKE: EPOCH_ONE_RTT,
}


class TlsHandshake:
    """:class:`Handshake` over an aioquic ``tls.Context`` that is configured but not started."""

    __slots__ = ("_context", "_pending", "_output", "_keys", "_started")

    def __init__(self, context: tls.Context) -> None:
        self._context = context
        #: Bytes of an incomplete handshake message, per epoch.
        self._pending: dict[int, bytes] = {}
        self._output: list[tuple[int, bytes]] = []
        self._keys: list[tuple[int, bool, int, bytes]] = []
        self._started = False
        context.update_traffic_key_cb = self._on_key

    @property
    def context(self) -> tls.Context:
        return self._context

    def _on_key(self, direction: tls.Direction, epoch: tls.Epoch, cipher_suite: tls.CipherSuite, secret: bytes) -> None:
        self._keys.append((epoch.value, direction == tls.Direction.ENCRYPT, int(cipher_suite), secret))

    def _fresh_buffers(self) -> dict[tls.Epoch, Buffer]:
        return {
            tls.Epoch.INITIAL: Buffer(capacity=_BUFFER_CAPACITY),
            tls.Epoch.HANDSHAKE: Buffer(capacity=_BUFFER_CAPACITY),
            tls.Epoch.ONE_RTT: Buffer(capacity=_BUFFER_CAPACITY),
        }

    def _run(self, data: bytes) -> None:
        buffers = self._fresh_buffers()
        try:
            self._context.handle_message(data, buffers)
        except tls.Alert as exc:
            raise QuicError(f"TLS alert: {exc}", error_code=QuicError.CRYPTO_ERROR + int(exc.description)) from None
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ONE_RTT):
            out = buffers[epoch].data
            if out:
                self._output.append((epoch.value, out))

    def start(self, transport_parameters: bytes) -> None:
        if self._started:
            raise QuicError("handshake already started", error_code=QuicError.INTERNAL_ERROR)
        self._started = True
        self._context.handshake_extensions.insert(0, (QUIC_TRANSPORT_PARAMETERS, transport_parameters))
        if self._context._is_client:
            self._run(b"")

    def receive(self, epoch: int, data: bytes) -> None:
        """Hand TLS one complete message at a time, each checked against its encryption level."""
        if not self._started:
            raise QuicError("handshake not started", error_code=QuicError.INTERNAL_ERROR)
        buf = self._pending.pop(epoch, b"") + data
        while len(buf) >= 4:
            size = 4 + int.from_bytes(buf[1:4], "big")
            if size > MAX_MESSAGE:
                raise QuicError("TLS message too large", error_code=QuicError.CRYPTO_BUFFER_EXCEEDED)
            if len(buf) < size:
                break
            if _EXPECTED_EPOCH.get(self._context.state, -1) != epoch:
                raise QuicError("TLS message at the wrong encryption level")
            self._run(buf[:size])
            buf = buf[size:]
        if buf:
            self._pending[epoch] = buf

    def take_output(self) -> list[tuple[int, bytes]]:
        out = self._output
        self._output = []
        return out

    def take_keys(self) -> list[tuple[int, bool, int, bytes]]:
        keys = self._keys
        self._keys = []
        return keys

    @property
    def complete(self) -> bool:
        return self._context.state in (tls.State.CLIENT_POST_HANDSHAKE, tls.State.SERVER_POST_HANDSHAKE)

    @property
    def alpn(self) -> bytes | None:
        alpn = self._context.alpn_negotiated
        return alpn.encode("ascii") if alpn is not None else None

    @property
    def peer_transport_parameters(self) -> bytes | None:
        for kind, data in self._context.received_extensions or ():
            if kind == QUIC_TRANSPORT_PARAMETERS:
                return data
        return None

    @property
    def peer_id(self) -> bytes | None:
        if isinstance(self._context, IrohTlsContext) and self.complete:
            return self._context.peer_id
        return None

    @property
    def early_data_accepted(self) -> bool:
        return False

    @property
    def session_resumed(self) -> bool:
        return False

    @property
    def remembered_transport_parameters(self) -> bytes | None:
        return None


def aioquic_iroh_handshake(
    secret_key: bytes | Ed25519PrivateKey,
    *,
    is_client: bool,
    alpns: Sequence[bytes | str],
    expected_peer: bytes | None = None,
) -> TlsHandshake:
    """iroh's TLS (raw Ed25519 keys, mutual auth); a client pins ``expected_peer``, the id it dials."""
    check_iroh_args(alpns, is_client=is_client, expected_peer=expected_peer)
    context = tls.Context(
        alpn_protocols=[alpn_text(a) for a in alpns],
        is_client=is_client,
        server_name=server_name(expected_peer) if is_client and expected_peer is not None else None,
        verify_mode=ssl.CERT_NONE,
    )
    context.certificate_private_key = private_key(secret_key)
    IrohTlsContext.adopt(context, bytes(expected_peer) if expected_peer is not None else None)
    return TlsHandshake(context)
