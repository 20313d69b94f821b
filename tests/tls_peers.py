"""Both TLS implementations behind one duck-typed face, and a pump that joins two of them.

``AioquicSide`` wraps irohpy's current TLS (aioquic's ``tls.Context`` adopted by
``IrohTlsContext``) in the interface of :mod:`irohpy.tls.handshake`, so interop tests drive
either implementation on either side the same way, message by message, in memory.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irohpy.errors import QuicError
from irohpy.tls.context import IrohTlsContext
from irohpy.tls.handshake import ClientHandshake, ServerHandshake
from irohpy.tls.name import server_name
from irohpy.tls.resumption import MAX_EARLY_DATA


class AioquicSide:
    """IrohTlsContext (aioquic) with the handshake interface; alerts become QuicError(0x100 + alert)."""

    def __init__(
        self,
        secret: bytes,
        *,
        is_client: bool,
        alpns: list[bytes],
        transport_parameters: bytes,
        expected_peer: bytes | None = None,
        ticket: tls.SessionTicket | None = None,
        ticket_store: dict[bytes, tls.SessionTicket] | None = None,
        send_certificate: bool = True,
    ) -> None:
        ctx = tls.Context(
            is_client=is_client,
            alpn_protocols=[a.decode() for a in alpns],
            max_early_data=None if is_client else MAX_EARLY_DATA,
            server_name=server_name(expected_peer) if is_client and expected_peer is not None else None,
        )
        ctx.certificate_private_key = Ed25519PrivateKey.from_private_bytes(secret)
        ctx.handshake_extensions = [(tls.ExtensionType.QUIC_TRANSPORT_PARAMETERS, transport_parameters)]
        self.tickets: list[tls.SessionTicket] = []
        self._keys: list[tuple[int, bool, int, bytes]] = []
        ctx.update_traffic_key_cb = lambda d, e, c, s: self._keys.append(
            (e.value, d == tls.Direction.ENCRYPT, int(c), s)
        )
        if is_client:
            ctx.session_ticket = ticket
            ctx.new_session_ticket_cb = self.tickets.append
        elif ticket_store is not None:
            ctx.get_session_ticket_cb = lambda label: ticket_store.pop(label, None)
            ctx.new_session_ticket_cb = lambda t: ticket_store.__setitem__(t.ticket, t)
        self.ctx = IrohTlsContext.adopt(ctx, expected_peer)
        if not send_certificate:
            self.ctx.certificate = None
        self._output: list[tuple[int, bytes]] = []

    def _run(self, data: bytes) -> None:
        bufs = {epoch: Buffer(capacity=65536) for epoch in tls.Epoch}
        try:
            self.ctx.handle_message(data, bufs)
        except tls.Alert as exc:
            raise QuicError(str(exc), error_code=0x100 + exc.description) from exc
        for epoch, buf in bufs.items():
            if buf.tell():
                self._output.append((epoch.value, buf.data))

    def start(self) -> None:
        self._run(b"")

    def receive(self, epoch: int, data: bytes) -> None:
        self._run(data)

    def take_output(self) -> list[tuple[int, bytes]]:
        out, self._output = self._output, []
        return out

    def take_keys(self) -> list[tuple[int, bool, int, bytes]]:
        out, self._keys = self._keys, []
        return out

    @property
    def complete(self) -> bool:
        return self.ctx.state in (tls.State.CLIENT_POST_HANDSHAKE, tls.State.SERVER_POST_HANDSHAKE)

    @property
    def peer_id(self) -> bytes | None:
        return self.ctx.peer_id if self.complete else None

    @property
    def alpn(self) -> bytes | None:
        negotiated = self.ctx.alpn_negotiated
        return None if negotiated is None else negotiated.encode()

    @property
    def peer_transport_parameters(self) -> bytes | None:
        for kind, data in self.ctx.received_extensions or ():
            if kind == tls.ExtensionType.QUIC_TRANSPORT_PARAMETERS:
                return data
        return None

    @property
    def early_data_accepted(self) -> bool:
        return self.ctx.early_data_accepted

    @property
    def session_resumed(self) -> bool:
        return self.ctx.session_resumed


def pump(client: Any, server: Any, max_rounds: int = 10) -> tuple[list[Any], list[Any]]:
    """Start ``client`` and move CRYPTO data both ways until quiet; returns all keys installed."""
    client.start()
    client_keys: list[Any] = []
    server_keys: list[Any] = []
    for _ in range(max_rounds):
        moved = False
        client_keys += client.take_keys()
        for epoch, data in client.take_output():
            moved = True
            server.receive(epoch, data)
        server_keys += server.take_keys()
        for epoch, data in server.take_output():
            moved = True
            client.receive(epoch, data)
        client_keys += client.take_keys()
        if not moved:
            break
    return client_keys, server_keys


def ours_client(secret: bytes, expected_peer: bytes, **kwargs: Any) -> ClientHandshake:
    kwargs.setdefault("alpns", [b"irohpy/test/0"])
    kwargs.setdefault("transport_parameters", b"client-tp")
    return ClientHandshake(secret, expected_peer=expected_peer, **kwargs)


def ours_server(secret: bytes, **kwargs: Any) -> ServerHandshake:
    kwargs.setdefault("alpns", [b"irohpy/test/0"])
    kwargs.setdefault("transport_parameters", b"server-tp")
    return ServerHandshake(secret, **kwargs)


def aioquic_client(secret: bytes, expected_peer: bytes, **kwargs: Any) -> AioquicSide:
    kwargs.setdefault("alpns", [b"irohpy/test/0"])
    kwargs.setdefault("transport_parameters", b"client-tp")
    return AioquicSide(secret, is_client=True, expected_peer=expected_peer, **kwargs)


def aioquic_server(secret: bytes, **kwargs: Any) -> AioquicSide:
    kwargs.setdefault("alpns", [b"irohpy/test/0"])
    kwargs.setdefault("transport_parameters", b"server-tp")
    return AioquicSide(secret, is_client=False, **kwargs)

