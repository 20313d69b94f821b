"""TLS 1.3 with X.509 certificates (irohpy.tls.webpki): the QAD handshake, both sides ours,
two real QuicConnections on the simulated link; and aioquic's standard TLS client against our
server, an independent implementation of the same handshake."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioConnection
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.errors import ConfigError, QuicError, TlsError
from irohpy.quic import connection as qc
from irohpy.quic import transport_params as tp
from irohpy.quic.address_discovery import ObservedAddressReceived
from irohpy.tls import messages as m
from irohpy.tls.webpki import (
    CaTlsConfig,
    ServerCertificate,
    WebPkiClientHandshake,
    WebPkiServerHandshake,
    verify_chain,
)
from tests.lab_ca import LabCa
from tests.quic_conn_sim import SERVER_ADDR, Link, Net, Ours, Theirs

ALPN = b"/iroh-qad/0"
CA = LabCa()


class Qad(Ours):
    def __init__(self, conn: qc.QuicConnection) -> None:
        super().__init__(conn)
        self.observed: list[ObservedAddressReceived] = []

    def _events(self) -> None:
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, ObservedAddressReceived):
                self.observed.append(ev)
            elif isinstance(ev, qc.HandshakeCompleted):
                self.handshake_done = True
                self.alpn = ev.alpn
                self.peer_id = ev.peer_id
            elif isinstance(ev, qc.ConnectionTerminated) and self.terminated is None:
                self.terminated = (ev.error_code, ev.reason, ev.cause)


def server_cert(tmp_path: Path, *names: str, **kw: object) -> ServerCertificate:
    cert, key = CA.issue(*names, **kw).write(tmp_path)  # type: ignore[arg-type]
    return ServerCertificate.load(cert, key)


def run(certificate: ServerCertificate, server_name: str, ca: CaTlsConfig) -> tuple[Qad, Qad, Net]:
    client_hs = WebPkiClientHandshake(server_name=server_name, alpns=[ALPN], ca=ca)
    client = Qad(qc.QuicConnection(qc.QuicConfig(is_client=True, observed_address_role=tp.ROLE_RECEIVE,
                                                 max_streams_bidi=0, max_streams_uni=0), client_hs))
    client.conn.connect(SERVER_ADDR, 0.0)
    server = Qad(qc.QuicConnection(qc.QuicConfig(is_client=False, observed_address_role=tp.ROLE_SEND,
                                                 max_streams_bidi=0, max_streams_uni=0),
                                   WebPkiServerHandshake(certificate, alpns=[ALPN])))
    net = Net(client, server, Link(), 1)
    net.run(10.0, lambda: (client.handshake_done and bool(client.observed)) or client.terminated is not None)
    return client, server, net


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1()),
                                 rsa.generate_private_key(65537, 2048), ed25519.Ed25519PrivateKey.generate()],
                         ids=["p256", "p384", "rsa", "ed25519"])
def test_a_trusted_certificate_completes_and_the_client_learns_its_address(tmp_path: Path, key: object) -> None:
    certificate = server_cert(tmp_path, "relay.lab", "127.0.0.1", key=key)
    for name in ("relay.lab", "127.0.0.1"):
        client, server, _ = run(certificate, name, CaTlsConfig.custom_roots([CA.root_pem]))
        assert client.terminated is None and client.alpn == ALPN and client.peer_id is None
        assert client.observed == [ObservedAddressReceived("127.0.0.1", 1111, 0)]


@pytest.mark.parametrize(("name", "roots", "code"), [
    ("other.lab", None, 0x100 + 42),            # the certificate names another host
    ("127.0.0.2", None, 0x100 + 42),
    ("relay.lab", LabCa("another CA").root_pem, 0x100 + 48),  # another CA
])
def test_an_untrusted_certificate_fails_with_an_alert(tmp_path: Path, name: str, roots: bytes | None,
                                                      code: int) -> None:
    certificate = server_cert(tmp_path, "relay.lab", "127.0.0.1")
    client, server, net = run(certificate, name, CaTlsConfig.custom_roots([roots or CA.root_pem]))
    assert client.terminated is not None and client.terminated[0] == code
    assert not client.handshake_done and client.observed == []


def test_an_expired_certificate_fails(tmp_path: Path) -> None:
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    certificate = server_cert(tmp_path, "relay.lab", not_before=old)
    client, _, _ = run(certificate, "relay.lab", CaTlsConfig.custom_roots([CA.root_pem]))
    assert client.terminated is not None and client.terminated[0] == 0x100 + 42


def test_a_client_without_our_alpn_is_refused(tmp_path: Path) -> None:
    certificate = server_cert(tmp_path, "relay.lab")
    client_hs = WebPkiClientHandshake(server_name="relay.lab", alpns=[b"h3"], ca=CaTlsConfig.custom_roots([CA.root_pem]))
    client = Qad(qc.QuicConnection(qc.QuicConfig(is_client=True), client_hs))
    client.conn.connect(SERVER_ADDR, 0.0)
    server = Qad(qc.QuicConnection(qc.QuicConfig(is_client=False), WebPkiServerHandshake(certificate, alpns=[ALPN])))
    Net(client, server, Link(), 1).run(10.0, lambda: client.terminated is not None)
    assert client.terminated is not None and client.terminated[0] == 0x100 + 120


def test_aioquic_verifies_our_server_with_the_lab_root(tmp_path: Path) -> None:
    certificate = server_cert(tmp_path, "relay.lab")
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN.decode()], server_name="relay.lab")
    config.cadata = CA.root_pem
    config.verify_mode = ssl.CERT_REQUIRED
    theirs = AioConnection(configuration=config)
    theirs.connect(SERVER_ADDR, now=0.0)
    client = Theirs(theirs, SERVER_ADDR)
    server = Qad(qc.QuicConnection(qc.QuicConfig(is_client=False, observed_address_role=tp.ROLE_SEND),
                                   WebPkiServerHandshake(certificate, alpns=[ALPN])))
    Net(client, server, Link(), 1).run(
        10.0, lambda: (client.handshake_done and server.handshake_done) or client.terminated is not None)
    assert client.handshake_done and client.alpn == ALPN and server.handshake_done


def test_certificate_files_that_do_not_fit_are_config_errors(tmp_path: Path) -> None:
    cert, _ = CA.issue("relay.lab").write(tmp_path)
    other = tmp_path / "other.pem"
    other.write_bytes(CA.issue("relay.lab").key_pem)
    with pytest.raises(ConfigError, match="does not belong"):
        ServerCertificate.load(cert, other)
    with pytest.raises(ConfigError):
        ServerCertificate.load(tmp_path / "missing.pem", other)
    with pytest.raises(TlsError):
        CaTlsConfig.custom_roots([b"not a certificate"])
    with pytest.raises(TlsError):
        CaTlsConfig.custom_roots([]).store()


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=300), max_size=4))
def test_garbage_chains_are_bad_certificates(chain: list[bytes]) -> None:
    with pytest.raises(QuicError) as info:
        verify_chain(CaTlsConfig.custom_roots([CA.root_pem]).store(), chain, "relay.lab", 0.0)
    assert info.value.error_code in (0x100 + 42, 0x100 + 48)


@given(st.binary(max_size=200))
def test_garbage_handshake_bytes_raise_typed_errors(data: bytes) -> None:
    server = WebPkiServerHandshake(ServerCertificate([b"x"], ed25519.Ed25519PrivateKey.generate()), alpns=[ALPN])
    server.start(b"")
    try:
        server.receive(0, m.frame(m.CLIENT_HELLO, data))
    except QuicError:
        pass


def test_the_system_roots_honour_ssl_cert_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    certificate = server_cert(tmp_path, "relay.lab")
    root = tmp_path / "root.pem"
    root.write_bytes(CA.root_pem)
    client, _, _ = run(certificate, "relay.lab", CaTlsConfig.system())
    assert client.terminated is not None and client.terminated[0] == 0x100 + 48  # not a system root
    monkeypatch.setenv("SSL_CERT_FILE", str(root))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    client, _, _ = run(certificate, "relay.lab", CaTlsConfig.system())
    assert client.terminated is None and client.observed
    client, _, _ = run(certificate, "relay.lab", CaTlsConfig.custom_roots([LabCa("x").root_pem]).with_extra_roots([CA.root_pem]))
    assert client.terminated is None
