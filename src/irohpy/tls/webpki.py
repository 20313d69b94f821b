"""TLS 1.3 with X.509 certificates for QUIC: what a relay's QAD service speaks (sans-IO).

Peer connections use raw public keys (:mod:`irohpy.tls.handshake`); QUIC Address Discovery
(``/iroh-qad/0`` on UDP 7842) uses the relay's ordinary certificate, the one its HTTPS serves,
so that a client trusts the relay as it trusts its web server. This module has both sides of
that handshake, on the same messages and key schedule:

- :class:`WebPkiServerHandshake` sends the certificate chain of a :class:`ServerCertificate`
  and signs with its key (ECDSA P-256/P-384/P-521, RSA-PSS, Ed25519); no client
  authentication, no tickets, no 0-RTT;
- :class:`WebPkiClientHandshake` checks the chain against the roots of a :class:`CaTlsConfig`
  and the server's name (a DNS name, sent as SNI, or an IP literal, which needs an IP SAN),
  with ``cryptography``'s WebPKI verifier, then the CertificateVerify signature.

Both implement :class:`irohpy.quic.handshake.Handshake`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from irohpy.errors import ConfigError, QuicError, TlsError
from irohpy.tls import messages as m
from irohpy.tls.handshake import (
    BAD_CERTIFICATE,
    CIPHER_SUITES,
    DECRYPT_ERROR,
    HANDSHAKE,
    HANDSHAKE_FAILURE,
    ILLEGAL_PARAMETER,
    INITIAL,
    MISSING_EXTENSION,
    NO_APPLICATION_PROTOCOL,
    ONE_RTT,
    PROTOCOL_VERSION,
    UNEXPECTED_MESSAGE,
    UNSUPPORTED_EXTENSION,
    _Handshake,
    _x25519,
    _x25519_public,
    alert,
)
from irohpy.tls.key_schedule import SERVER_SIGNATURE_CONTEXT, KeySchedule, Transcript

ECDSA_SECP256R1_SHA256: Final = 0x0403
ECDSA_SECP384R1_SHA384: Final = 0x0503
ECDSA_SECP521R1_SHA512: Final = 0x0603
RSA_PSS_RSAE_SHA256: Final = 0x0804
RSA_PSS_RSAE_SHA384: Final = 0x0805
RSA_PSS_RSAE_SHA512: Final = 0x0806
ED25519: Final = m.ED25519
#: What a client verifies, in its order of preference (RFC 8446 §4.2.3: no PKCS#1 v1.5 in 1.3).
SIGNATURE_SCHEMES: Final = (
    ECDSA_SECP256R1_SHA256,
    ECDSA_SECP384R1_SHA384,
    ED25519,
    RSA_PSS_RSAE_SHA256,
    RSA_PSS_RSAE_SHA384,
    RSA_PSS_RSAE_SHA512,
    ECDSA_SECP521R1_SHA512,
)
UNKNOWN_CA: Final = 48
_ECDSA: Final[dict[int, tuple[str, hashes.HashAlgorithm]]] = {
    ECDSA_SECP256R1_SHA256: ("secp256r1", hashes.SHA256()),
    ECDSA_SECP384R1_SHA384: ("secp384r1", hashes.SHA384()),
    ECDSA_SECP521R1_SHA512: ("secp521r1", hashes.SHA512()),
}
_RSA_PSS: Final[dict[int, hashes.HashAlgorithm]] = {
    RSA_PSS_RSAE_SHA256: hashes.SHA256(),
    RSA_PSS_RSAE_SHA384: hashes.SHA384(),
    RSA_PSS_RSAE_SHA512: hashes.SHA512(),
}
#: Certificates in a chain we look at; longer chains are refused before any parsing.
MAX_CHAIN: Final = 8

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _pss(algorithm: hashes.HashAlgorithm) -> padding.PSS:
    """RSA-PSS as TLS 1.3 signs it: MGF1 with the same hash, salt as long as the digest."""
    return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH)


class ServerCertificate:
    """A server's certificate chain (DER, leaf first) and the leaf's private key."""

    def __init__(self, chain: Sequence[bytes], key: SigningKey) -> None:
        if not chain:
            raise TlsError("a certificate chain needs at least the leaf")
        self.chain = [bytes(c) for c in chain]
        self.key = key

    @classmethod
    def load(cls, cert_path: str | Path, key_path: str | Path) -> ServerCertificate:
        """The PEM files a web server takes (full chain, then its key); ConfigError if unusable."""
        try:
            certs = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except (OSError, ValueError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"cannot load TLS certificate {cert_path} with key {key_path}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise ConfigError(f"TLS key {key_path}: only ECDSA, RSA and Ed25519 keys are supported")
        if certs[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
                != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            raise ConfigError(f"TLS key {key_path} does not belong to the certificate {cert_path}")
        return cls([c.public_bytes(serialization.Encoding.DER) for c in certs], key)

    def schemes(self) -> list[int]:
        """The signature schemes this key signs with, best first."""
        key = self.key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return [ED25519]
        if isinstance(key, rsa.RSAPrivateKey):
            return [RSA_PSS_RSAE_SHA256, RSA_PSS_RSAE_SHA384, RSA_PSS_RSAE_SHA512]
        return [s for s, (curve, _) in _ECDSA.items() if key.curve.name == curve]

    def sign(self, scheme: int, data: bytes) -> bytes:
        key = self.key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, _pss(_RSA_PSS[scheme]), _RSA_PSS[scheme])
        return key.sign(data, ec.ECDSA(_ECDSA[scheme][1]))


def _verify_signature(public: object, scheme: int, signature: bytes, data: bytes) -> None:
    """CertificateVerify under the leaf's key; alerts for a scheme that does not fit the key."""
    try:
        if scheme == ED25519 and isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
        elif scheme in _RSA_PSS and isinstance(public, rsa.RSAPublicKey):
            algorithm = _RSA_PSS[scheme]
            public.verify(signature, data, _pss(algorithm), algorithm)
        elif scheme in _ECDSA and isinstance(public, ec.EllipticCurvePublicKey) \
                and public.curve.name == _ECDSA[scheme][0]:
            public.verify(signature, data, ec.ECDSA(_ECDSA[scheme][1]))
        else:
            raise alert(ILLEGAL_PARAMETER, f"CertificateVerify scheme 0x{scheme:04x} does not fit the certificate key")
    except InvalidSignature:
        raise alert(DECRYPT_ERROR, "CertificateVerify signature does not verify") from None


class CaTlsConfig:
    """Which certificate authorities an endpoint trusts for non-iroh TLS (its relays' HTTPS and
    QAD), as iroh's ``CaTlsConfig``: the system's roots (Python's default verify paths, which
    honour ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``) or only custom roots, plus extra roots."""

    def __init__(self, *, system: bool, roots: Iterable[bytes | str] = ()) -> None:
        self._system = system
        self._extra: list[x509.Certificate] = []
        for root in roots:
            self._extra += _parse_roots(root)
        self._store: Store | None = None

    @classmethod
    def system(cls) -> CaTlsConfig:
        return cls(system=True)

    @classmethod
    def custom_roots(cls, roots: Iterable[bytes | str]) -> CaTlsConfig:
        """Only these roots (PEM text or DER bytes, a PEM may hold several)."""
        return cls(system=False, roots=roots)

    def with_extra_roots(self, roots: Iterable[bytes | str]) -> CaTlsConfig:
        out = CaTlsConfig(system=self._system)
        out._extra = list(self._extra)
        for root in roots:
            out._extra += _parse_roots(root)
        return out

    def ssl_context(self) -> ssl.SSLContext:
        """For HTTPS (the relay's websocket and probes)."""
        context = ssl.create_default_context() if self._system else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        for cert in self._extra:
            context.load_verify_locations(cadata=cert.public_bytes(serialization.Encoding.PEM).decode())
        return context

    def store(self) -> Store:
        """The roots for :class:`WebPkiClientHandshake` (read once)."""
        if self._store is None:
            roots = list(self._extra)
            if self._system:
                roots += _system_roots()
            if not roots:
                raise TlsError("no trusted root certificates")
            self._store = Store(roots)
        return self._store


def _parse_roots(root: bytes | str) -> list[x509.Certificate]:
    try:
        if isinstance(root, str) or root.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_certificates(root.encode() if isinstance(root, str) else root)
        return [x509.load_der_x509_certificate(root)]
    except ValueError as exc:
        raise TlsError(f"not a root certificate: {exc}") from None


def _system_roots() -> list[x509.Certificate]:
    """The roots OpenSSL would use: the default CA file and directory (``SSL_CERT_FILE``,
    ``SSL_CERT_DIR`` override them), each certificate once."""
    paths = ssl.get_default_verify_paths()
    out: dict[bytes, x509.Certificate] = {}
    files = [paths.cafile] if paths.cafile else []
    if paths.capath and os.path.isdir(paths.capath):
        files += [os.path.join(paths.capath, n) for n in sorted(os.listdir(paths.capath)) if n.endswith((".pem", ".crt"))]
    for name in files:
        try:
            with warnings.catch_warnings():
                # Some distributions still ship roots with a non-positive serial number.
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certs = x509.load_pem_x509_certificates(Path(name).read_bytes())
        except (OSError, ValueError):
            continue
        for cert in certs:
            out.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    return list(out.values())


def _subject(server_name: str) -> x509.DNSName | x509.IPAddress:
    host = server_name.rstrip(".")
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def verify_chain(store: Store, chain: list[bytes], server_name: str, now: float) -> object:
    """The leaf's public key if ``chain`` leads to a root of ``store`` and names ``server_name``."""
    if not chain or len(chain) > MAX_CHAIN:
        raise alert(BAD_CERTIFICATE, f"certificate chain of {len(chain)} certificates")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError as exc:
        raise alert(BAD_CERTIFICATE, f"unparsable certificate: {exc}") from None
    when = datetime.datetime.fromtimestamp(now, datetime.UTC)
    verifier = PolicyBuilder().store(store).time(when).build_server_verifier(_subject(server_name))
    try:
        verifier.verify(certs[0], certs[1:])
    except VerificationError as exc:
        raise alert(UNKNOWN_CA if "no interior errors" in str(exc) else BAD_CERTIFICATE,
                    f"certificate of {server_name} not trusted: {exc}") from None
    return certs[0].public_key()


_WAIT_SERVER_HELLO: Final = 0
_WAIT_ENCRYPTED_EXTENSIONS: Final = 1
_WAIT_CERTIFICATE: Final = 2
_WAIT_CERTIFICATE_VERIFY: Final = 3
_WAIT_FINISHED: Final = 4
_CONNECTED: Final = 5
_WAIT_CLIENT_HELLO: Final = 10
_WAIT_CLIENT_FINISHED: Final = 11
_SERVER_DONE: Final = 12


class WebPkiClientHandshake(_Handshake):
    """Dials ``server_name`` (a host name or IP literal) and checks its certificate against ``ca``."""

    def __init__(
        self,
        *,
        server_name: str,
        alpns: Sequence[bytes],
        ca: CaTlsConfig,
        cipher_suites: Sequence[int] = CIPHER_SUITES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(None, alpns, b"", None, cipher_suites, clock)
        if not self._alpns:
            raise TlsError("an ALPN is required to connect")
        self._server_name = server_name
        self._store = ca.store()
        self._x25519 = X25519PrivateKey.generate()
        self._state = _WAIT_SERVER_HELLO
        self._hello = b""
        self._client_hs = b""
        self._server_hs = b""
        self._leaf_key: object = None
        self._started = False

    @property
    def remembered_transport_parameters(self) -> bytes | None:
        return None

    def start(self, transport_parameters: bytes) -> None:
        if self._started:
            raise QuicError("handshake already started", error_code=QuicError.INTERNAL_ERROR)
        self._started = True
        self._transport_parameters = bytes(transport_parameters)
        sni = None if isinstance(_subject(self._server_name), x509.IPAddress) else self._server_name.rstrip(".")
        self._hello = m.encode_client_hello(
            random=os.urandom(32),
            cipher_suites=self._suites,
            key_shares=[(m.X25519, _x25519_public(self._x25519))],
            alpns=self._alpns,
            transport_parameters=self._transport_parameters,
            server_name=sni,
            signature_schemes=SIGNATURE_SCHEMES,
            raw_public_keys=False,
        )
        self._output.append((INITIAL, self._hello))

    def _handle(self, message: bytes) -> None:
        kind = message[0]
        state = self._state
        if state == _WAIT_SERVER_HELLO and kind == m.SERVER_HELLO:
            self._on_server_hello(message)
        elif state == _WAIT_ENCRYPTED_EXTENSIONS and kind == m.ENCRYPTED_EXTENSIONS:
            self._on_encrypted_extensions(message)
        elif state == _WAIT_CERTIFICATE and kind == m.CERTIFICATE:
            self._on_certificate(message)
        elif state == _WAIT_CERTIFICATE_VERIFY and kind == m.CERTIFICATE_VERIFY:
            self._on_certificate_verify(message)
        elif state == _WAIT_FINISHED and kind == m.FINISHED:
            self._on_finished(message)
        elif state == _CONNECTED and kind == m.NEW_SESSION_TICKET:
            m.decode_new_session_ticket(message)  # no resumption here: checked and dropped
        else:
            raise alert(UNEXPECTED_MESSAGE, f"unexpected handshake message type {kind}")

    def _on_server_hello(self, message: bytes) -> None:
        hello = m.decode_server_hello(message)
        if hello.is_retry:
            raise alert(UNEXPECTED_MESSAGE, "HelloRetryRequest for the X25519 share we sent")
        if hello.version != m.TLS13:
            raise alert(PROTOCOL_VERSION, "server did not select TLS 1.3")
        if hello.session_id:
            raise alert(ILLEGAL_PARAMETER, "server echoed a session id we did not send")
        if hello.cipher_suite not in self._suites:
            raise alert(ILLEGAL_PARAMETER, "server selected a cipher suite we did not offer")
        if hello.group != m.X25519:
            raise alert(ILLEGAL_PARAMETER, "server selected a group we did not offer")
        if hello.psk_identity is not None or hello.other_extensions:
            raise alert(UNSUPPORTED_EXTENSION, "server answered an extension we did not offer")
        schedule = self._schedule = KeySchedule(hello.cipher_suite)
        self.cipher_suite = hello.cipher_suite
        transcript = self._transcript = Transcript(schedule.hash_name)
        transcript.add(self._hello)
        transcript.add(message)
        schedule.advance(_x25519(self._x25519, hello.key_share))
        digest = transcript.digest()
        self._client_hs = schedule.derive(b"c hs traffic", digest)
        self._server_hs = schedule.derive(b"s hs traffic", digest)
        self._install(HANDSHAKE, False, self._server_hs)
        self._install(HANDSHAKE, True, self._client_hs)
        self._recv_epoch = HANDSHAKE
        self._state = _WAIT_ENCRYPTED_EXTENSIONS

    def _on_encrypted_extensions(self, message: bytes) -> None:
        extensions = m.decode_encrypted_extensions(message)
        assert self._transcript is not None
        self._transcript.add(message)
        if extensions.alpn is None or extensions.alpn not in self._alpns:
            raise alert(NO_APPLICATION_PROTOCOL, "server did not select one of our ALPNs")
        if extensions.transport_parameters is None:
            raise alert(MISSING_EXTENSION, "server sent no QUIC transport parameters")
        if extensions.early_data or extensions.client_cert_type is not None or extensions.server_cert_type is not None:
            raise alert(UNSUPPORTED_EXTENSION, "server answered an extension we did not offer")
        self.alpn = extensions.alpn
        self.peer_transport_parameters = extensions.transport_parameters
        self._state = _WAIT_CERTIFICATE

    def _on_certificate(self, message: bytes) -> None:
        context, chain = m.decode_certificate(message)
        if context:
            raise alert(ILLEGAL_PARAMETER, "certificate_request_context must be empty in the handshake")
        self._leaf_key = verify_chain(self._store, chain, self._server_name, self._clock())
        assert self._transcript is not None
        self._transcript.add(message)
        self._state = _WAIT_CERTIFICATE_VERIFY

    def _on_certificate_verify(self, message: bytes) -> None:
        scheme, signature = m.decode_certificate_verify(message)
        if scheme not in SIGNATURE_SCHEMES:
            raise alert(ILLEGAL_PARAMETER, f"CertificateVerify uses scheme 0x{scheme:04x} we did not offer")
        assert self._transcript is not None
        _verify_signature(self._leaf_key, scheme, signature, SERVER_SIGNATURE_CONTEXT + self._transcript.digest())
        self._transcript.add(message)
        self._state = _WAIT_FINISHED

    def _on_finished(self, message: bytes) -> None:
        schedule, transcript = self._check_finished(message, self._server_hs, "server")
        schedule.advance(None)
        digest = transcript.digest()
        self._install(ONE_RTT, False, schedule.derive(b"s ap traffic", digest))
        client_ap = schedule.derive(b"c ap traffic", digest)
        self._send(HANDSHAKE, m.frame(m.FINISHED, schedule.finished(self._client_hs, transcript.digest())))
        self._install(ONE_RTT, True, client_ap)
        self._client_hs = self._server_hs = b""
        self._recv_epoch = ONE_RTT
        self._state = _CONNECTED
        self.complete = True


class WebPkiServerHandshake(_Handshake):
    """Serves ``certificate`` to any client offering one of ``alpns``; no client authentication."""

    def __init__(
        self,
        certificate: ServerCertificate,
        *,
        alpns: Sequence[bytes],
        cipher_suites: Sequence[int] = CIPHER_SUITES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(None, alpns, b"", None, cipher_suites, clock)
        self._certificate = certificate
        self._state = _WAIT_CLIENT_HELLO
        self._client_hs = b""
        self._client_ap = b""
        self._started = False

    @property
    def remembered_transport_parameters(self) -> bytes | None:
        return None

    def start(self, transport_parameters: bytes) -> None:
        if self._started:
            raise QuicError("handshake already started", error_code=QuicError.INTERNAL_ERROR)
        self._started = True
        self._transport_parameters = bytes(transport_parameters)

    def _handle(self, message: bytes) -> None:
        kind = message[0]
        if self._state == _WAIT_CLIENT_HELLO and kind == m.CLIENT_HELLO:
            self._on_client_hello(message)
        elif self._state == _WAIT_CLIENT_FINISHED and kind == m.FINISHED:
            self._on_finished(message)
        else:
            raise alert(UNEXPECTED_MESSAGE, f"unexpected handshake message type {kind}")

    def _on_client_hello(self, message: bytes) -> None:
        hello = m.decode_client_hello(message)
        if m.TLS13 not in hello.versions:
            raise alert(PROTOCOL_VERSION, "client does not offer TLS 1.3")
        if hello.session_id:
            raise QuicError("QUIC ClientHello with a legacy_session_id", error_code=QuicError.PROTOCOL_VIOLATION)
        suite = next((s for s in self._suites if s in hello.cipher_suites), None)
        if suite is None:
            raise alert(HANDSHAKE_FAILURE, "no common cipher suite")
        scheme = next((s for s in self._certificate.schemes() if s in hello.signature_schemes), None)
        if scheme is None:
            raise alert(HANDSHAKE_FAILURE, "client accepts no signature scheme of our certificate key")
        if hello.server_cert_types is not None and 0 not in hello.server_cert_types:
            raise alert(HANDSHAKE_FAILURE, "client accepts no X.509 certificate")
        alpn = next((a for a in self._alpns if hello.alpns is not None and a in hello.alpns), None)
        if alpn is None:
            raise alert(NO_APPLICATION_PROTOCOL, "no common ALPN")
        if hello.transport_parameters is None:
            raise alert(MISSING_EXTENSION, "client sent no QUIC transport parameters")
        share = next((k for g, k in hello.key_shares or [] if g == m.X25519), None)
        if share is None:
            raise alert(HANDSHAKE_FAILURE, "client sent no X25519 key share")
        private = X25519PrivateKey.generate()
        shared = _x25519(private, share)
        schedule = self._schedule = KeySchedule(suite)
        transcript = self._transcript = Transcript(schedule.hash_name)
        transcript.add(message)
        self.cipher_suite = suite
        self.alpn = alpn
        self.peer_transport_parameters = hello.transport_parameters
        self._send(INITIAL, m.encode_server_hello(random=os.urandom(32), session_id=b"", cipher_suite=suite,
                                                  group=m.X25519, key_share=_x25519_public(private), psk_identity=None))
        schedule.advance(shared)
        digest = transcript.digest()
        server_hs = schedule.derive(b"s hs traffic", digest)
        self._client_hs = schedule.derive(b"c hs traffic", digest)
        self._install(HANDSHAKE, True, server_hs)
        self._install(HANDSHAKE, False, self._client_hs)
        self._send(HANDSHAKE, m.encode_encrypted_extensions(
            alpn=alpn, early_data=False, transport_parameters=self._transport_parameters, raw_public_keys=False))
        self._send(HANDSHAKE, m.encode_certificate_chain(self._certificate.chain))
        signature = self._certificate.sign(scheme, SERVER_SIGNATURE_CONTEXT + transcript.digest())
        self._send(HANDSHAKE, m.encode_certificate_verify(signature, scheme))
        self._send(HANDSHAKE, m.frame(m.FINISHED, schedule.finished(server_hs, transcript.digest())))
        schedule.advance(None)
        digest = transcript.digest()
        self._install(ONE_RTT, True, schedule.derive(b"s ap traffic", digest))
        self._client_ap = schedule.derive(b"c ap traffic", digest)
        self._recv_epoch = HANDSHAKE
        self._state = _WAIT_CLIENT_FINISHED

    def _on_finished(self, message: bytes) -> None:
        self._check_finished(message, self._client_hs, "client")
        self._install(ONE_RTT, False, self._client_ap)
        self._client_hs = self._client_ap = b""
        self._recv_epoch = ONE_RTT
        self._state = _SERVER_DONE
        self.complete = True
