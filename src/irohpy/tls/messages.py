"""TLS 1.3 handshake messages as iroh's QUIC uses them (RFC 8446 §4, RFC 7250, RFC 9001 §8).

Only the messages and extensions of iroh's subset are decoded; unknown extensions are skipped,
a repeated one is refused. Every decoder reads the whole message or raises
:class:`~irohpy.errors.TlsDecodeError` (crypto error 0x100 + decode_error), so garbage never
reaches the handshake state machine. Encoders take and return ``bytes``.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from irohpy.errors import TlsDecodeError

# Handshake message types (RFC 8446 §4).
CLIENT_HELLO: Final = 1
SERVER_HELLO: Final = 2
NEW_SESSION_TICKET: Final = 4
ENCRYPTED_EXTENSIONS: Final = 8
CERTIFICATE: Final = 11
CERTIFICATE_REQUEST: Final = 13
CERTIFICATE_VERIFY: Final = 15
FINISHED: Final = 20
MESSAGE_HASH: Final = 254

# Extensions.
SERVER_NAME: Final = 0
SUPPORTED_GROUPS: Final = 10
SIGNATURE_ALGORITHMS: Final = 13
ALPN: Final = 16
CLIENT_CERTIFICATE_TYPE: Final = 19
SERVER_CERTIFICATE_TYPE: Final = 20
PRE_SHARED_KEY: Final = 41
EARLY_DATA: Final = 42
SUPPORTED_VERSIONS: Final = 43
PSK_KEY_EXCHANGE_MODES: Final = 45
KEY_SHARE: Final = 51
QUIC_TRANSPORT_PARAMETERS: Final = 0x39

TLS13: Final = 0x0304
LEGACY_VERSION: Final = 0x0303
X25519: Final = 0x001D
ED25519: Final = 0x0807
PSK_DHE_KE: Final = 1
RAW_PUBLIC_KEY: Final = 2
HRR_RANDOM: Final = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
MAX_MESSAGE_SIZE: Final = 1 << 16
"""Largest handshake message accepted; iroh's are a few hundred bytes."""


class Reader:
    """Big-endian reads over one message body; any overrun is a TlsDecodeError."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def _take(self, n: int) -> int:
        start = self.pos
        if start + n > self.end:
            raise TlsDecodeError("TLS message is truncated")
        self.pos = start + n
        return start

    def u8(self) -> int:
        return self.data[self._take(1)]

    def u16(self) -> int:
        start = self._take(2)
        return int.from_bytes(self.data[start : start + 2], "big")

    def u24(self) -> int:
        start = self._take(3)
        return int.from_bytes(self.data[start : start + 3], "big")

    def u32(self) -> int:
        start = self._take(4)
        return int.from_bytes(self.data[start : start + 4], "big")

    def raw(self, n: int) -> bytes:
        start = self._take(n)
        return self.data[start : start + n]

    def vec(self, width: int, low: int = 0, high: int = MAX_MESSAGE_SIZE) -> bytes:
        """An opaque vector with a ``width``-byte length prefix, its length in ``[low, high]``."""
        n = self.u8() if width == 1 else self.u16() if width == 2 else self.u24()
        if not low <= n <= high:
            raise TlsDecodeError(f"TLS vector of {n} bytes, allowed {low}..{high}")
        return self.raw(n)

    def sub(self, width: int, low: int = 0) -> Reader:
        """A reader over the next length-prefixed vector; this reader skips past it."""
        n = self.u8() if width == 1 else self.u16() if width == 2 else self.u24()
        if n < low:
            raise TlsDecodeError(f"TLS vector of {n} bytes, at least {low} needed")
        start = self._take(n)
        return Reader(self.data, start, start + n)

    def u16_list(self, width: int) -> list[int]:
        body = self.sub(width, low=2)
        if (body.end - body.pos) % 2:
            raise TlsDecodeError("TLS list of 16-bit values has an odd length")
        out: list[int] = []
        while body.pos < body.end:
            out.append(body.u16())
        return out

    def done(self) -> None:
        if self.pos != self.end:
            raise TlsDecodeError("trailing bytes in TLS message")


def _vec(width: int, data: bytes) -> bytes:
    return len(data).to_bytes(width, "big") + data


def _u16s(values: list[int] | tuple[int, ...]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def _extensions(exts: list[tuple[int, bytes]]) -> bytes:
    return _vec(2, b"".join(kind.to_bytes(2, "big") + _vec(2, data) for kind, data in exts))


def read_extensions(r: Reader) -> list[tuple[int, Reader]]:
    """The extension block as (type, body reader), in order; a repeated type is refused."""
    block = r.sub(2)
    seen: set[int] = set()
    out: list[tuple[int, Reader]] = []
    while block.pos < block.end:
        kind = block.u16()
        if kind in seen:
            raise TlsDecodeError(f"TLS extension {kind} appears twice", error_code=0x100 + 47)
        seen.add(kind)
        out.append((kind, block.sub(2)))
    return out


def frame(msg_type: int, body: bytes) -> bytes:
    """A handshake message: type, 24-bit length, body."""
    return bytes((msg_type,)) + len(body).to_bytes(3, "big") + body


def _alpn_list(r: Reader) -> list[bytes]:
    body = r.sub(2, low=2)
    out: list[bytes] = []
    while body.pos < body.end:
        out.append(body.vec(1, low=1))
    r.done()
    return out


def _cert_types(r: Reader) -> list[int]:
    types = list(r.vec(1, low=1))
    r.done()
    return types


# -- ClientHello --------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class ClientHello:
    """What a server needs from a ClientHello. ``binders_offset`` is where the PSK binders
    list starts in the framed message (the binder hash covers everything before it)."""

    random: bytes
    session_id: bytes
    cipher_suites: list[int]
    versions: list[int] = dataclasses.field(default_factory=list)
    groups: list[int] = dataclasses.field(default_factory=list)
    key_shares: list[tuple[int, bytes]] | None = None
    signature_schemes: list[int] = dataclasses.field(default_factory=list)
    alpns: list[bytes] | None = None
    client_cert_types: list[int] | None = None
    server_cert_types: list[int] | None = None
    transport_parameters: bytes | None = None
    psk_modes: list[int] = dataclasses.field(default_factory=list)
    early_data: bool = False
    psk_identities: list[tuple[bytes, int]] = dataclasses.field(default_factory=list)
    psk_binders: list[bytes] = dataclasses.field(default_factory=list)
    binders_offset: int = 0


def decode_client_hello(message: bytes) -> ClientHello:
    """Decode a framed ClientHello (type 1)."""
    r = Reader(message)
    if r.u8() != CLIENT_HELLO or r.u24() != len(message) - 4:
        raise TlsDecodeError("not a ClientHello")
    if r.u16() != LEGACY_VERSION:
        raise TlsDecodeError("ClientHello legacy_version is not 0x0303", error_code=0x100 + 70)
    hello = ClientHello(random=r.raw(32), session_id=r.vec(1, high=32), cipher_suites=r.u16_list(2))
    if r.vec(1, low=1, high=255) != b"\x00":
        raise TlsDecodeError("ClientHello offers compression", error_code=0x100 + 47)
    exts = read_extensions(r)
    r.done()
    for index, (kind, body) in enumerate(exts):
        if kind == SUPPORTED_VERSIONS:
            hello.versions = body.u16_list(1)
            body.done()
        elif kind == SUPPORTED_GROUPS:
            hello.groups = body.u16_list(2)
            body.done()
        elif kind == SIGNATURE_ALGORITHMS:
            hello.signature_schemes = body.u16_list(2)
            body.done()
        elif kind == KEY_SHARE:
            shares = body.sub(2)
            hello.key_shares = []
            while shares.pos < shares.end:
                hello.key_shares.append((shares.u16(), shares.vec(2, low=1)))
            body.done()
        elif kind == ALPN:
            hello.alpns = _alpn_list(body)
        elif kind == CLIENT_CERTIFICATE_TYPE:
            hello.client_cert_types = _cert_types(body)
        elif kind == SERVER_CERTIFICATE_TYPE:
            hello.server_cert_types = _cert_types(body)
        elif kind == QUIC_TRANSPORT_PARAMETERS:
            hello.transport_parameters = body.raw(body.end - body.pos)
        elif kind == PSK_KEY_EXCHANGE_MODES:
            hello.psk_modes = list(body.vec(1, low=1))
            body.done()
        elif kind == EARLY_DATA:
            body.done()
            hello.early_data = True
        elif kind == PRE_SHARED_KEY:
            if index != len(exts) - 1:
                raise TlsDecodeError("pre_shared_key is not the last extension", error_code=0x100 + 47)
            identities = body.sub(2, low=7)
            while identities.pos < identities.end:
                hello.psk_identities.append((identities.vec(2, low=1), identities.u32()))
            hello.binders_offset = body.pos
            binders = body.sub(2, low=33)
            while binders.pos < binders.end:
                hello.psk_binders.append(binders.vec(1, low=32))
            body.done()
            if len(hello.psk_binders) != len(hello.psk_identities):
                raise TlsDecodeError("PSK identities and binders differ in number", error_code=0x100 + 47)
    return hello


def encode_client_hello(
    *,
    random: bytes,
    cipher_suites: list[int],
    key_shares: list[tuple[int, bytes]],
    alpns: list[bytes],
    transport_parameters: bytes,
    psk_identity: tuple[bytes, int] | None = None,
    binder_length: int = 0,
    early_data: bool = False,
    server_name: str | None = None,
    signature_schemes: tuple[int, ...] = (ED25519,),
    raw_public_keys: bool = True,
) -> bytes:
    """A framed ClientHello; with a PSK its binder is zeros, for :func:`patch_binder`.

    iroh's by default; ``raw_public_keys=False`` asks for an X.509 certificate instead, as a
    WebPKI client does (with the ``server_name`` it sends as SNI and the schemes it verifies)."""
    exts: list[tuple[int, bytes]] = []
    if server_name is not None:
        exts.append((SERVER_NAME, _vec(2, b"\x00" + _vec(2, server_name.encode("ascii")))))
    exts += [
        (SUPPORTED_VERSIONS, _vec(1, TLS13.to_bytes(2, "big"))),
        (SUPPORTED_GROUPS, _vec(2, _u16s([X25519]))),
        (KEY_SHARE, _vec(2, b"".join(g.to_bytes(2, "big") + _vec(2, k) for g, k in key_shares))),
        (SIGNATURE_ALGORITHMS, _vec(2, _u16s(signature_schemes))),
        (ALPN, _vec(2, b"".join(_vec(1, a) for a in alpns))),
    ]
    if raw_public_keys:
        exts += [
            (CLIENT_CERTIFICATE_TYPE, _vec(1, bytes((RAW_PUBLIC_KEY,)))),
            (SERVER_CERTIFICATE_TYPE, _vec(1, bytes((RAW_PUBLIC_KEY,)))),
        ]
    exts += [
        (QUIC_TRANSPORT_PARAMETERS, transport_parameters),
        (PSK_KEY_EXCHANGE_MODES, _vec(1, bytes((PSK_DHE_KE,)))),
    ]
    if early_data:
        exts.append((EARLY_DATA, b""))
    if psk_identity is not None:
        identity, age = psk_identity
        identities = _vec(2, _vec(2, identity) + age.to_bytes(4, "big"))
        exts.append((PRE_SHARED_KEY, identities + _vec(2, _vec(1, bytes(binder_length)))))
    body = (
        LEGACY_VERSION.to_bytes(2, "big")
        + random
        + _vec(1, b"")
        + _vec(2, _u16s(cipher_suites))
        + _vec(1, b"\x00")
        + _extensions(exts)
    )
    return frame(CLIENT_HELLO, body)


def binders_offset(hello: bytes, binder_length: int) -> int:
    """Where the binders list starts in a ClientHello with one binder at its very end."""
    return len(hello) - binder_length - 3


def patch_binder(hello: bytes, binder: bytes) -> bytes:
    """``hello`` with its single (last) binder replaced."""
    return hello[: len(hello) - len(binder)] + binder


# -- ServerHello / HelloRetryRequest ------------------------------------------


@dataclasses.dataclass(slots=True)
class ServerHello:
    """A ServerHello, or a HelloRetryRequest when ``is_retry`` (then ``key_share`` is empty)."""

    random: bytes
    session_id: bytes
    cipher_suite: int
    version: int | None = None
    group: int | None = None
    key_share: bytes = b""
    psk_identity: int | None = None
    other_extensions: list[int] = dataclasses.field(default_factory=list)

    @property
    def is_retry(self) -> bool:
        return self.random == HRR_RANDOM


def decode_server_hello(message: bytes) -> ServerHello:
    """Decode a framed ServerHello or HelloRetryRequest (type 2)."""
    r = Reader(message)
    if r.u8() != SERVER_HELLO or r.u24() != len(message) - 4:
        raise TlsDecodeError("not a ServerHello")
    if r.u16() != LEGACY_VERSION:
        raise TlsDecodeError("ServerHello legacy_version is not 0x0303", error_code=0x100 + 70)
    hello = ServerHello(random=r.raw(32), session_id=r.vec(1, high=32), cipher_suite=r.u16())
    if r.u8() != 0:
        raise TlsDecodeError("ServerHello selects compression", error_code=0x100 + 47)
    exts = read_extensions(r)
    r.done()
    for kind, body in exts:
        if kind == SUPPORTED_VERSIONS:
            hello.version = body.u16()
        elif kind == KEY_SHARE:
            hello.group = body.u16()
            if not hello.is_retry:
                hello.key_share = body.vec(2, low=1)
        elif kind == PRE_SHARED_KEY and not hello.is_retry:
            hello.psk_identity = body.u16()
        else:
            hello.other_extensions.append(kind)
            body.pos = body.end
        body.done()
    return hello


def encode_server_hello(
    *, random: bytes, session_id: bytes, cipher_suite: int, group: int, key_share: bytes, psk_identity: int | None
) -> bytes:
    """A framed ServerHello; with ``random=HRR_RANDOM`` and empty ``key_share``, a HelloRetryRequest."""
    share = group.to_bytes(2, "big") + (_vec(2, key_share) if key_share else b"")
    exts = [(SUPPORTED_VERSIONS, TLS13.to_bytes(2, "big")), (KEY_SHARE, share)]
    if psk_identity is not None:
        exts.append((PRE_SHARED_KEY, psk_identity.to_bytes(2, "big")))
    body = LEGACY_VERSION.to_bytes(2, "big") + random + _vec(1, session_id) + cipher_suite.to_bytes(2, "big")
    return frame(SERVER_HELLO, body + b"\x00" + _extensions(exts))


# -- EncryptedExtensions -------------------------------------------------------


@dataclasses.dataclass(slots=True)
class EncryptedExtensions:
    alpn: bytes | None = None
    early_data: bool = False
    client_cert_type: int | None = None
    server_cert_type: int | None = None
    transport_parameters: bytes | None = None


def decode_encrypted_extensions(message: bytes) -> EncryptedExtensions:
    r = Reader(message)
    if r.u8() != ENCRYPTED_EXTENSIONS or r.u24() != len(message) - 4:
        raise TlsDecodeError("not EncryptedExtensions")
    exts = read_extensions(r)
    r.done()
    out = EncryptedExtensions()
    for kind, body in exts:
        if kind == ALPN:
            alpns = _alpn_list(body)
            if len(alpns) != 1:
                raise TlsDecodeError("server selected more than one ALPN", error_code=0x100 + 47)
            out.alpn = alpns[0]
        elif kind == EARLY_DATA:
            out.early_data = True
        elif kind == CLIENT_CERTIFICATE_TYPE:
            out.client_cert_type = body.u8()
        elif kind == SERVER_CERTIFICATE_TYPE:
            out.server_cert_type = body.u8()
        elif kind == QUIC_TRANSPORT_PARAMETERS:
            out.transport_parameters = body.raw(body.end - body.pos)
        else:
            body.pos = body.end
        body.done()
    return out


def encode_encrypted_extensions(
    *, alpn: bytes, early_data: bool, transport_parameters: bytes, raw_public_keys: bool = True
) -> bytes:
    exts = [(ALPN, _vec(2, _vec(1, alpn)))]
    if raw_public_keys:
        exts += [
            (CLIENT_CERTIFICATE_TYPE, bytes((RAW_PUBLIC_KEY,))),
            (SERVER_CERTIFICATE_TYPE, bytes((RAW_PUBLIC_KEY,))),
        ]
    exts.append((QUIC_TRANSPORT_PARAMETERS, transport_parameters))
    if early_data:
        exts.append((EARLY_DATA, b""))
    return frame(ENCRYPTED_EXTENSIONS, _extensions(exts))


# -- CertificateRequest, Certificate, CertificateVerify, Finished --------------


def decode_certificate_request(message: bytes) -> tuple[bytes, list[int]]:
    """(request context, signature schemes) of a CertificateRequest."""
    r = Reader(message)
    if r.u8() != CERTIFICATE_REQUEST or r.u24() != len(message) - 4:
        raise TlsDecodeError("not a CertificateRequest")
    context = r.vec(1, high=255)
    schemes: list[int] | None = None
    for kind, body in read_extensions(r):
        if kind == SIGNATURE_ALGORITHMS:
            schemes = body.u16_list(2)
        else:
            body.pos = body.end
        body.done()
    r.done()
    if schemes is None:
        raise TlsDecodeError("CertificateRequest without signature_algorithms", error_code=0x100 + 109)
    return context, schemes


def encode_certificate_request() -> bytes:
    return frame(CERTIFICATE_REQUEST, _vec(1, b"") + _extensions([(SIGNATURE_ALGORITHMS, _vec(2, _u16s([ED25519])))]))


def decode_certificate(message: bytes) -> tuple[bytes, list[bytes]]:
    """(request context, certificate entries' data) of a Certificate message."""
    r = Reader(message)
    if r.u8() != CERTIFICATE or r.u24() != len(message) - 4:
        raise TlsDecodeError("not a Certificate")
    context = r.vec(1, high=255)
    entries = r.sub(3)
    r.done()
    certs: list[bytes] = []
    while entries.pos < entries.end:
        certs.append(entries.vec(3, low=1))
        entries.vec(2)
    return context, certs


def encode_certificate(spki: bytes) -> bytes:
    return encode_certificate_chain([spki])


def encode_certificate_chain(entries: list[bytes]) -> bytes:
    """A Certificate message: a raw public key, or an X.509 chain (DER, leaf first)."""
    return frame(CERTIFICATE, _vec(1, b"") + _vec(3, b"".join(_vec(3, e) + _vec(2, b"") for e in entries)))


def decode_certificate_verify(message: bytes) -> tuple[int, bytes]:
    r = Reader(message)
    if r.u8() != CERTIFICATE_VERIFY or r.u24() != len(message) - 4:
        raise TlsDecodeError("not a CertificateVerify")
    scheme = r.u16()
    signature = r.vec(2, low=1)
    r.done()
    return scheme, signature


def encode_certificate_verify(signature: bytes, scheme: int = ED25519) -> bytes:
    return frame(CERTIFICATE_VERIFY, scheme.to_bytes(2, "big") + _vec(2, signature))


def decode_finished(message: bytes, hash_length: int) -> bytes:
    if len(message) != 4 + hash_length or message[0] != FINISHED or int.from_bytes(message[1:4], "big") != hash_length:
        raise TlsDecodeError("not a Finished of the negotiated hash length")
    return message[4:]


# -- NewSessionTicket ----------------------------------------------------------


@dataclasses.dataclass(slots=True)
class NewSessionTicket:
    lifetime: int
    age_add: int
    nonce: bytes
    ticket: bytes = dataclasses.field(repr=False)
    max_early_data_size: int | None = None


def decode_new_session_ticket(message: bytes) -> NewSessionTicket:
    r = Reader(message)
    if r.u8() != NEW_SESSION_TICKET or r.u24() != len(message) - 4:
        raise TlsDecodeError("not a NewSessionTicket")
    nst = NewSessionTicket(lifetime=r.u32(), age_add=r.u32(), nonce=r.vec(1, high=255), ticket=r.vec(2, low=1))
    for kind, body in read_extensions(r):
        if kind == EARLY_DATA:
            nst.max_early_data_size = body.u32()
        else:
            body.pos = body.end
        body.done()
    r.done()
    return nst


def encode_new_session_ticket(nst: NewSessionTicket) -> bytes:
    exts: list[tuple[int, bytes]] = []
    if nst.max_early_data_size is not None:
        exts.append((EARLY_DATA, nst.max_early_data_size.to_bytes(4, "big")))
    body = (
        nst.lifetime.to_bytes(4, "big")
        + nst.age_add.to_bytes(4, "big")
        + _vec(1, nst.nonce)
        + _vec(2, nst.ticket)
        + _extensions(exts)
    )
    return frame(NEW_SESSION_TICKET, body)
