"""OUR relay server (``irohpy relay``, a separate process) driven by a bare test client.

The client below is aiohttp's WebSocket client plus ``irohpy.relay.protocol`` and nothing
else: no retries, no automatic pongs, so every reply the test sees is what the relay sent.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy import PublicKey, SecretKey
from irohpy.base.addr import IpAddr
from irohpy.errors import ConfigError, InvalidToken
from irohpy.relay import protocol as p
from irohpy.relay.server import AccessMode, RelayServer, ServerConfig, load_config
from irohpy.relay.server.config import RateLimit, Tls
from irohpy.relay.server.tokens import PREFIX, issue_token, parse_token, verify_token
from tests.relay_fixture import RelayProcess, relay_process, relay_server

T = 5.0


class Closed(Exception):
    """The relay closed the WebSocket: ``code`` and ``reason`` are what it said."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class Denied(Exception):
    pass


class RawClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, secret: SecretKey) -> None:
        self.ws = ws
        self.secret = secret
        self.id = secret.public()
        self.version = p.version_of(ws.protocol or "")

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, relay_url: str, secret: SecretKey | None = None, *,
                      protocols: tuple[str, ...] = p.SUBPROTOCOLS, auth: bool = True,
                      token: str | None = None, query_token: str | None = None) -> RawClient:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        params = {"token": query_token} if query_token else None
        ws = await session.ws_connect(relay_url + "relay", protocols=protocols, headers=headers, params=params,
                                      max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=T))
        client = cls(ws, secret or SecretKey.generate())
        if auth:
            try:
                await client.authenticate()
            except BaseException:
                await client.close()
                raise
        return client

    async def authenticate(self) -> None:
        challenge = await self.recv()
        assert isinstance(challenge, p.ServerChallenge)
        await self.send(p.answer_challenge(self.secret, challenge))
        reply = await self.recv()
        if isinstance(reply, p.ServerDeniesAuth):
            raise Denied(reply.reason)
        assert isinstance(reply, p.ServerConfirmsAuth)

    async def send(self, frame: p.Frame) -> None:
        await self.ws.send_bytes(p.encode(frame))

    async def recv(self, timeout: float = T) -> p.Frame:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    return p.decode(msg.data, version=self.version)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    raise Closed(self.ws.close_code, msg.extra or "")
                if msg.type is aiohttp.WSMsgType.ERROR:
                    raise Closed(self.ws.close_code, str(msg.data))

    async def recv_skipping_pings(self, timeout: float = T) -> p.Frame:
        """The next frame that is not a relay Ping; Pings are answered on the way."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if not isinstance(frame, p.Ping):
                    return frame
                await self.send(p.Pong(frame.data))

    async def closed(self, timeout: float = T) -> Closed:
        """Read (discarding frames) until the relay closes the connection."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.recv(timeout)
        except Closed as exc:
            return exc
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    """One default relay shared by the tests that only need the protocol."""
    with relay_process() as r:
        yield r


async def wait_for_metric(relay: RelayProcess, name: str, minimum: float, timeout: float = T, **labels: str) -> float:
    async with asyncio.timeout(timeout):
        while (value := relay.metric(name, **labels)) < minimum:
            await asyncio.sleep(0.02)
    return value


# -- handshake and relaying ------------------------------------------------------------


async def test_handshake_v2_and_v1(relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    v2 = await RawClient.connect(session, relay.url)
    v1 = await RawClient.connect(session, relay.url, protocols=(p.SUBPROTOCOL_V1,))
    try:
        assert v2.ws.protocol == p.SUBPROTOCOL_V2 and v1.ws.protocol == p.SUBPROTOCOL_V1
        await v2.send(p.Ping(b"12345678"))
        assert await v2.recv() == p.Pong(b"12345678")
    finally:
        await v2.close()
        await v1.close()


async def test_datagrams_and_batches_keep_ecn_and_segments(relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    a = await RawClient.connect(session, relay.url)
    b = await RawClient.connect(session, relay.url)
    try:
        before = relay.metrics()
        await a.send(p.ClientToRelay(b.id, 1, b"hello b"))
        assert await b.recv() == p.RelayToClient(a.id, 1, b"hello b")
        await a.send(p.ClientToRelay(b.id, 3, b"h" * 1300, 1200))
        assert await b.recv() == p.RelayToClient(a.id, 3, b"h" * 1300, 1200)
        await b.send(p.ClientToRelay(a.id, 2, b"x" * 2500, 1200))
        got = await a.recv()
        assert got == p.RelayToClient(b.id, 2, b"x" * 2500, 1200) and len(got.datagrams()) == 3
        # Rust iroh batches packets smaller than 1200 (a GSO segment is its first packet's size):
        # refusing them stalled its retransmissions for good.
        await a.send(p.ClientToRelay(b.id, 0, b"s" * 1000, 300))
        got = await b.recv()
        assert got == p.RelayToClient(a.id, 0, b"s" * 1000, 300) and len(got.datagrams()) == 4
        after = relay.metrics()
        assert after["iroh_relay_bytes_forwarded_total"] - before["iroh_relay_bytes_forwarded_total"] == 7 + 1300 + 2500 + 1000
        assert after["iroh_relay_packets_forwarded_total"] - before["iroh_relay_packets_forwarded_total"] == 1 + 2 + 3 + 4
    finally:
        await a.close()
        await b.close()


async def test_unknown_destination_is_dropped_and_counted(relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    a = await RawClient.connect(session, relay.url)
    try:
        before = relay.metric("iroh_relay_packets_dropped_total", reason="unknown_destination")
        await a.send(p.ClientToRelay(SecretKey.generate().public(), 0, b"n" * 2000, 1200))
        await wait_for_metric(relay, "iroh_relay_packets_dropped_total", before + 2, reason="unknown_destination")
        await a.send(p.Ping(b"stillok!"))
        assert await a.recv() == p.Pong(b"stillok!")
    finally:
        await a.close()


async def test_endpoint_gone_after_sender_leaves(relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    a = await RawClient.connect(session, relay.url)
    b = await RawClient.connect(session, relay.url)
    try:
        await a.send(p.ClientToRelay(b.id, 0, b"hi"))
        assert await b.recv() == p.RelayToClient(a.id, 0, b"hi")
        await a.close()
        assert await b.recv() == p.EndpointGone(a.id)
    finally:
        await b.close()


@pytest.mark.parametrize("old_protocol", [p.SUBPROTOCOL_V2, p.SUBPROTOCOL_V1])
async def test_same_id_replaces_older_connection(relay: RelayProcess, session: aiohttp.ClientSession,
                                                 old_protocol: str) -> None:
    secret = SecretKey.generate()
    old = await RawClient.connect(session, relay.url, secret, protocols=(old_protocol,))
    new = await RawClient.connect(session, relay.url, secret)
    sender = await RawClient.connect(session, relay.url)
    try:
        notice = await old.recv()
        if old_protocol == p.SUBPROTOCOL_V2:
            assert notice == p.StatusFrame(p.Status.SAME_ENDPOINT_ID_CONNECTED)
        else:
            assert isinstance(notice, p.Health) and "same endpoint id" in notice.problem
        closed = await old.closed()
        assert closed.code == 1000 and "same endpoint id" in closed.reason
        await sender.send(p.ClientToRelay(secret.public(), 0, b"to the new one"))
        assert await new.recv() == p.RelayToClient(sender.id, 0, b"to the new one")
    finally:
        for c in (old, new, sender):
            await c.close()


async def test_client_ping_gets_pong_and_text_is_ignored(relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    a = await RawClient.connect(session, relay.url)
    try:
        await a.ws.send_str("not a relay frame")
        for i in range(3):
            await a.send(p.Ping(bytes([i]) * 8))
            assert await a.recv() == p.Pong(bytes([i]) * 8)
    finally:
        await a.close()


# -- HTTP endpoints ------------------------------------------------------------------------


async def test_probe_endpoints(relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    async with session.get(relay.url + "ping") as r:
        assert r.status == 200 and await r.read() == b""
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    async with session.get(relay.url + "generate_204", headers={"X-Iroh-Challenge": "ts_relay.example"}) as r:
        assert r.status == 204 and r.headers["X-Iroh-Response"] == "response ts_relay.example"
    async with session.get(relay.url + "generate_204", headers={"X-Iroh-Challenge": "bad challenge!"}) as r:
        assert r.status == 204 and "X-Iroh-Response" not in r.headers
    async with session.get(relay.url + "healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    for path in ("", "index.html"):
        async with session.get(relay.url + path) as r:
            assert r.status == 200 and "iroh relay" in await r.text()
    async with session.get(relay.url + "robots.txt") as r:
        assert "Disallow: /" in await r.text()
    async with session.get(relay.url + "no/such/page") as r:
        assert r.status == 404


async def raw_upgrade(relay: RelayProcess, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Send a hand-written upgrade request; the status and headers of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        lines = ["GET /relay HTTP/1.1", f"Host: 127.0.0.1:{relay.port}", "Connection: Upgrade",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(T):
            head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        status = int(head[0].split()[1])
        return status, {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
    finally:
        writer.close()
        await writer.wait_closed()


async def test_upgrade_checks(relay: RelayProcess) -> None:
    ok = {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    status, headers = await raw_upgrade(relay, {**ok, "Sec-WebSocket-Protocol": "iroh-relay-v2, iroh-relay-v1"})
    assert status == 101 and headers["sec-websocket-protocol"] == "iroh-relay-v2"
    status, headers = await raw_upgrade(relay, {**ok, "Sec-WebSocket-Protocol": "iroh-relay-v1"})
    assert status == 101 and headers["sec-websocket-protocol"] == "iroh-relay-v1"
    assert (await raw_upgrade(relay, ok))[0] == 400
    assert (await raw_upgrade(relay, {**ok, "Sec-WebSocket-Protocol": "iroh-relay-v9"}))[0] == 400
    status, headers = await raw_upgrade(relay, {"Upgrade": "websocket", "Sec-WebSocket-Version": "8",
                                                "Sec-WebSocket-Protocol": "iroh-relay-v2"})
    assert status == 400 and headers["sec-websocket-version"] == "13"


# -- bad input -------------------------------------------------------------------------------


async def test_frame_before_auth_closes(relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    c = await RawClient.connect(session, relay.url, auth=False)
    try:
        before = relay.metric("iroh_relay_auth_failures_total", reason="protocol")
        assert isinstance(await c.recv(), p.ServerChallenge)
        await c.send(p.Ping(b"tooearly"))
        closed = await c.closed()
        assert closed.code == 1002 and "expected ClientAuth" in closed.reason
        assert relay.metric("iroh_relay_auth_failures_total", reason="protocol") == before + 1
    finally:
        await c.close()


async def test_bad_signature_is_denied(relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    c = await RawClient.connect(session, relay.url, auth=False)
    try:
        before = relay.metric("iroh_relay_auth_failures_total", reason="signature")
        challenge = await c.recv()
        assert isinstance(challenge, p.ServerChallenge)
        forged = p.ClientAuth(c.id, SecretKey.generate().sign(p.challenge_message(challenge.challenge)))
        await c.send(forged)
        assert await c.recv() == p.ServerDeniesAuth("signature invalid")
        closed = await c.closed()
        assert closed.code == 1008 and closed.reason == "signature invalid"
        assert relay.metric("iroh_relay_auth_failures_total", reason="signature") == before + 1
    finally:
        await c.close()


@pytest.mark.parametrize(("message", "code", "reason"), [
    (bytes([50]) + b"\x00" * 4, 1002, "unknown relay frame type 50"),
    (bytes([4]) + b"\x01" * 10, 1002, "truncated"),
    (bytes([9]) + b"\x01" * 3, 1002, "Ping frame body has 3 bytes"),
    (bytes([4]) + b"\x00" * (70 * 1024), 1002, "too large"),
    (bytes([6]) + b"\x00" * 40, 1002, "unexpected RelayToClient frame"),
    (bytes([4]) + b"\x00" * ((1 << 20) + 1), 1009, ""),
])
async def test_bad_frames_close_with_a_reason_and_spare_others(
        relay: RelayProcess, session: aiohttp.ClientSession, message: bytes, code: int, reason: str) -> None:
    bystander = await RawClient.connect(session, relay.url)
    peer = await RawClient.connect(session, relay.url)
    bad = await RawClient.connect(session, relay.url)
    try:
        before = relay.metric("iroh_relay_disconnects_total", reason="protocol_error")
        if bytes([6]) == message[:1]:  # a RelayToClient needs a valid key to reach the frame check
            message = bytes([6]) + bytes(peer.id) + b"\x00" + b"x" * 7
        try:
            await bad.ws.send_bytes(message)
        except ConnectionError:
            # The relay refused an oversized message at its header and closed while we were still
            # writing the body: the reset may eat its close frame; the metric below says why.
            assert code == 1009
        else:
            closed = await bad.closed()
            assert closed.code == code and reason in closed.reason
        await wait_for_metric(relay, "iroh_relay_disconnects_total", before + 1, reason="protocol_error")
        await bystander.send(p.ClientToRelay(peer.id, 0, b"still relaying"))
        assert await peer.recv() == p.RelayToClient(bystander.id, 0, b"still relaying")
    finally:
        for c in (bystander, peer, bad):
            await c.close()


# -- timers, limits and slow clients -----------------------------------------------------------

FAST_PING = """
[timers]
ping_interval_secs = 0.2
ping_jitter_secs = [0.05, 0.1]
pong_timeout_secs = [1.0, 1.0]
"""


async def test_server_pings_and_drops_silent_clients(session: aiohttp.ClientSession) -> None:
    async with relay_server(FAST_PING) as relay:
        alive = await RawClient.connect(session, relay.url)
        silent = await RawClient.connect(session, relay.url)

        async def answer_pings(n: int) -> None:
            for _ in range(n):
                frame = await alive.recv()
                assert isinstance(frame, p.Ping)
                await alive.send(p.Pong(frame.data))

        responder = asyncio.create_task(answer_pings(5))
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            ping = await silent.recv()
            assert isinstance(ping, p.Ping)
            closed = await silent.closed()
            assert closed.reason == "no pong in time" and loop.time() - start < 2
            assert relay.metric("iroh_relay_disconnects_total", reason="ping_timeout") == 1
            await asyncio.wait_for(responder, T)
            # Each Pong brings the next Ping one interval later, not at the 1 s pong deadline.
            assert loop.time() - start < 3
            assert relay.metric("iroh_relay_connections") == 1
            assert relay.metric("iroh_relay_pings_sent_total") >= 6
        finally:
            responder.cancel()
            await asyncio.gather(responder, return_exceptions=True)
            await alive.close()
            await silent.close()


async def test_slow_handshakes_and_silent_connections_are_cut_off(session: aiohttp.ClientSession) -> None:
    async with relay_server("[limits]\naccept_timeout_secs = 0.5\n") as relay:
        loop = asyncio.get_running_loop()
        start = loop.time()
        dawdler = await RawClient.connect(session, relay.url, auth=False)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)  # never sends a request
        try:
            assert isinstance(await dawdler.recv(), p.ServerChallenge)
            closed = await dawdler.closed()
            assert closed.code == 1008 and closed.reason == "handshake timed out"
            async with asyncio.timeout(T):
                assert await reader.read() == b""
            assert loop.time() - start < 3
            assert relay.metric("iroh_relay_auth_failures_total", reason="timeout") == 1
        finally:
            await dawdler.close()
            writer.close()
            await writer.wait_closed()


RATE_LIMITED = """
[limits.client.rx]
bytes_per_second = 20000
max_burst_bytes = 10000
"""


async def test_rate_limit_delays_every_frame_type_and_sends_status_once(session: aiohttp.ClientSession) -> None:
    """Like iroh-relay, the limit pauses reading (nothing is dropped), and pings pay too."""
    loop = asyncio.get_running_loop()
    async with relay_server(RATE_LIMITED) as relay:
        flooder = await RawClient.connect(session, relay.url)
        sink = await RawClient.connect(session, relay.url)
        try:
            start = loop.time()
            for _ in range(40):
                await flooder.send(p.ClientToRelay(sink.id, 0, b"f" * 1000))
            assert await flooder.recv() == p.StatusFrame(p.Status.RATE_LIMITED)
            for _ in range(40):
                assert await sink.recv_skipping_pings() == p.RelayToClient(flooder.id, 0, b"f" * 1000)
            # 40 frames of 1042 bytes on the wire, 10,000 of them in the burst, the rest at 20,000 B/s.
            assert loop.time() - start >= 0.9 * (40 * 1042 - 10_000) / 20_000
            assert relay.metric("iroh_relay_rx_ratelimited_bytes_total") > 0
            assert relay.metric("iroh_relay_rate_limited_clients_total") == 1
            assert sum(v for k, v in relay.metrics().items() if k.startswith("iroh_relay_packets_dropped")) == 0
            # Pings cost at least min_frame_bytes (256) each. The bucket may have refilled its whole
            # burst since (a loaded machine is slow between the phases), so only the rest waits.
            pings = 120
            start = loop.time()
            for i in range(pings):
                await flooder.send(p.Ping(i.to_bytes(8, "big")))
            for i in range(pings):  # no second Status on the way
                assert await flooder.recv() == p.Pong(i.to_bytes(8, "big"))
            assert loop.time() - start >= 0.9 * (pings * 256 - 10_000) / 20_000
            assert relay.metric("iroh_relay_rate_limited_clients_total") == 1
        finally:
            await flooder.close()
            await sink.close()


SMALL_QUEUE = """
[limits]
send_queue_packets = 8
send_queue_bytes = 131072
write_timeout_secs = 1.0
"""


def _tiny_receive_buffer(addr_info):  # type: ignore[no-untyped-def]
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_client_that_never_reads_costs_bounded_memory(session: aiohttp.ClientSession) -> None:
    async with relay_server(SMALL_QUEUE) as relay, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=_tiny_receive_buffer)) as slow_session:
        slow = await RawClient.connect(slow_session, relay.url)
        sender = await RawClient.connect(session, relay.url)
        c = await RawClient.connect(session, relay.url)
        d = await RawClient.connect(session, relay.url)
        try:
            chunk = b"s" * 60_000
            max_queued = 0.0
            for i in range(150):
                await sender.send(p.ClientToRelay(slow.id, 0, chunk))
                if i % 10 == 0:
                    m = relay.metrics()
                    max_queued = max(max_queued, m["iroh_relay_queued_bytes"])
                    assert m["iroh_relay_queued_packets"] <= 8
            assert max_queued <= 131072
            assert relay.metric("iroh_relay_packets_dropped_total", reason="queue_full") > 0
            # Others are unaffected while the slow one is stuck.
            await c.send(p.ClientToRelay(d.id, 0, b"unaffected"))
            assert await d.recv() == p.RelayToClient(c.id, 0, b"unaffected")
            await wait_for_metric(relay, "iroh_relay_disconnects_total", 1, reason="write_timeout")
            assert relay.metric("iroh_relay_queued_bytes") == 0
        finally:
            for client in (slow, sender, c, d):
                await client.close()


# -- access control ------------------------------------------------------------------------------

ALLOWED = SecretKey.generate()
BOTH_LISTS = SecretKey.generate()
ACCESS_LISTS = f"""
[access]
mode = "allowlist"
allowlist = ["{ALLOWED.public()}", "{BOTH_LISTS.public()}"]
denylist = ["{BOTH_LISTS.public()}"]
"""


async def test_allowlist_and_denylist(session: aiohttp.ClientSession) -> None:
    async with relay_server(ACCESS_LISTS) as relay:
        ok = await RawClient.connect(session, relay.url, ALLOWED)
        await ok.close()
        with pytest.raises(Denied, match="denylist"):
            await RawClient.connect(session, relay.url, BOTH_LISTS)
        with pytest.raises(Denied, match="not on this relay's allowlist"):
            await RawClient.connect(session, relay.url)
        assert relay.metric("iroh_relay_auth_failures_total", reason="denylisted") == 1
        assert relay.metric("iroh_relay_auth_failures_total", reason="not_allowlisted") == 1


async def test_denylist_with_everyone(session: aiohttp.ClientSession) -> None:
    config = f'[access]\ndenylist = ["{BOTH_LISTS.public()}"]\n'
    async with relay_server(config) as relay:
        await (await RawClient.connect(session, relay.url)).close()
        c = await RawClient.connect(session, relay.url, BOTH_LISTS, auth=False)
        try:
            with pytest.raises(Denied, match="denylist"):
                await c.authenticate()
            closed = await c.closed()
            assert closed.code == 1008 and "denylist" in closed.reason
        finally:
            await c.close()


ISSUER = SecretKey.generate()
REVOKED_ID = os.urandom(16)
TOKENS = f"""
[access]
mode = "tokens"
trusted_issuers = ["{ISSUER.public()}"]
revoked_tokens = ["{REVOKED_ID.hex()}"]
"""


@pytest.fixture(scope="module")
def token_relay() -> Iterator[RelayProcess]:
    with relay_process(TOKENS) as r:
        yield r


async def test_valid_tokens_admit(token_relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    me = SecretKey.generate()
    mine = issue_token(ISSUER, me.public(), 60)
    anyone = issue_token(ISSUER, None, 60)
    for kwargs in ({"token": mine}, {"query_token": mine}, {"token": anyone}):
        c = await RawClient.connect(session, token_relay.url, me, **kwargs)  # type: ignore[arg-type]
        await c.close()


@pytest.mark.parametrize(("make", "kind", "reason"), [
    (lambda me: None, "token_missing", "requires an access token"),
    (lambda me: issue_token(ISSUER, me, 60, now=time.time() - 120), "token_expired", "expired"),
    (lambda me: issue_token(ISSUER, SecretKey.generate().public(), 60), "token_wrong_subject", "another endpoint"),
    (lambda me: issue_token(SecretKey.generate(), me, 60), "token_untrusted_issuer", "not trusted"),
    (lambda me: _flip_signature(issue_token(ISSUER, me, 60)), "token_bad_signature", "signature invalid"),
    (lambda me: issue_token(ISSUER, me, 60, token_id=REVOKED_ID), "token_revoked", "revoked"),
    (lambda me: "irohrelay1.nope", "token_malformed", "malformed"),
])
async def test_bad_tokens_are_denied_after_the_challenge(
        token_relay: RelayProcess, session: aiohttp.ClientSession,
        make: Callable[[PublicKey], str | None], kind: str, reason: str) -> None:
    me = SecretKey.generate()
    before = token_relay.metric("iroh_relay_auth_failures_total", reason=kind)
    c = await RawClient.connect(session, token_relay.url, me, auth=False, token=make(me.public()))
    try:
        with pytest.raises(Denied, match=reason):
            await c.authenticate()  # the challenge came first, then the refusal
        assert (await c.closed()).code == 1008
    finally:
        await c.close()
    assert token_relay.metric("iroh_relay_auth_failures_total", reason=kind) == before + 1


def _flip_signature(token: str) -> str:
    head, _, sig = token.rpartition(".")
    return f"{head}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}"


async def test_sighup_revokes_live_and_future_tokens(session: aiohttp.ClientSession) -> None:
    async with relay_server(TOKENS) as relay:
        me = SecretKey.generate()
        token = issue_token(ISSUER, me.public(), 60)
        token_id = parse_token(token)[0].token_id
        live = await RawClient.connect(session, relay.url, me, token=token)
        other = await RawClient.connect(session, relay.url, token=issue_token(ISSUER, None, 60))
        try:
            await relay.reload(TOKENS.replace(f'"{REVOKED_ID.hex()}"', f'"{REVOKED_ID.hex()}", "{token_id.hex()}"'))
            closed = await live.closed()
            assert closed.code == 1008 and "revoked" in closed.reason
            with pytest.raises(Denied, match="revoked"):
                await RawClient.connect(session, relay.url, me, token=token)
            await other.send(p.Ping(b"survives"))
            assert await other.recv() == p.Pong(b"survives")
            assert relay.metric("iroh_relay_disconnects_total", reason="access_revoked") == 1
            with pytest.raises(RuntimeError, match="refused the new config"):
                await relay.reload('[access]\nmode = "bogus"\n')
            with pytest.raises(Denied, match="revoked"):  # the running policy stays
                await RawClient.connect(session, relay.url, me, token=token)
        finally:
            await live.close()
            await other.close()


# -- lifecycle and metrics ---------------------------------------------------------------------------


async def test_graceful_shutdown_sends_restarting(session: aiohttp.ClientSession) -> None:
    config = "[shutdown]\nreconnect_in_ms = 250\ntry_for_ms = 9000\n"
    async with relay_server(config) as relay:
        v2 = await RawClient.connect(session, relay.url)
        v1 = await RawClient.connect(session, relay.url, protocols=(p.SUBPROTOCOL_V1,))
        try:
            stopping = asyncio.create_task(relay.stop())
            for c in (v2, v1):
                assert await c.recv() == p.Restarting(250, 9000)
                closed = await c.closed()
                assert closed.code == 1001 and closed.reason == "relay shutting down"
            assert await stopping == 143  # 128 + SIGTERM, after the graceful shutdown
        finally:
            await v2.close()
            await v1.close()


async def test_metrics_track_connections(relay: RelayProcess, session: aiohttp.ClientSession) -> None:
    before = relay.metrics()
    clients = [await RawClient.connect(session, relay.url) for _ in range(3)]
    try:
        m = relay.metrics()
        assert m["iroh_relay_connections"] == before["iroh_relay_connections"] + 3
        assert m["iroh_relay_accepts_total"] == before["iroh_relay_accepts_total"] + 3
    finally:
        for c in clients:
            await c.close()
    closed = before['iroh_relay_disconnects_total{reason="closed"}'] + 3
    await wait_for_metric(relay, "iroh_relay_disconnects_total", closed, reason="closed")
    assert relay.metric("iroh_relay_connections") == before["iroh_relay_connections"]


def _self_signed(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem", pem


async def test_tls_relay_in_process(tmp_path: Path) -> None:
    cert, key, pem = _self_signed(tmp_path)
    config = ServerConfig(https_bind=IpAddr.parse("127.0.0.1:0"), http_bind=IpAddr.parse("127.0.0.1:0"),
                          metrics_bind=None, tls=Tls(cert, key))
    trust = ssl.create_default_context(cadata=pem.decode())
    trust.check_hostname = False
    async with RelayServer(config) as server, aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as s:
        assert server.relay_url.startswith("https://127.0.0.1:") and server.metrics_url is None
        async with s.get(server.relay_url + "ping") as r:
            assert r.status == 200 and "max-age" in r.headers["Strict-Transport-Security"]
        assert server.portal_url is not None
        async with s.get(server.portal_url, headers={"X-Iroh-Challenge": "ts_x"}) as r:
            assert r.status == 204 and r.headers["X-Iroh-Response"] == "response ts_x"
        async with s.get(server.portal_url.replace("generate_204", "relay")) as r:
            assert r.status == 404
        a = await RawClient.connect(s, server.relay_url)
        b = await RawClient.connect(s, server.relay_url)
        await a.send(p.ClientToRelay(b.id, 0, b"over tls"))
        assert await b.recv() == p.RelayToClient(a.id, 0, b"over tls")
        await b.close()
        shutting_down = asyncio.create_task(server.shutdown())
        assert await a.recv() == p.Restarting(1000, 30000)
        await a.closed()
        await shutting_down
        await a.close()


async def test_fixture_restart_keeps_ports_and_reaps_the_process(session: aiohttp.ClientSession) -> None:
    async with relay_server() as relay:
        url, metrics_url, pid = relay.url, relay.metrics_url, relay.pid
        a = await RawClient.connect(session, relay.url)
        await relay.restart()
        assert relay.returncode == 143 and (relay.url, relay.metrics_url) == (url, metrics_url)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert isinstance(await a.recv(), p.Restarting)
        await a.close()
        await (await RawClient.connect(session, relay.url)).close()


async def test_cli_serves_https_and_the_captive_portal(tmp_path: Path) -> None:
    cert, key, pem = _self_signed(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "irohpy", "relay", "--tls-cert", str(cert), "--tls-key", str(key),
        "--https-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0", "--metrics-bind", "none",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            relay_url = (await proc.stdout.readline()).decode().split()[-1]
            portal_url = (await proc.stdout.readline()).decode().split()[-1]
        assert relay_url.startswith("https://127.0.0.1:") and portal_url.startswith("http://127.0.0.1:")
        trust = ssl.create_default_context(cadata=pem.decode())
        trust.check_hostname = False
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as s:
            async with s.get(relay_url + "healthz") as r:
                assert r.status == 200 and "Content-Security-Policy" in r.headers
            async with s.get(portal_url, headers={"X-Iroh-Challenge": "ts_y"}) as r:
                assert r.headers["X-Iroh-Response"] == "response ts_y"
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), T) == 143  # 128 + SIGTERM, after a graceful shutdown
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.read()


# -- tokens: the format and the CLI ----------------------------------------------------------------


def test_documented_config_is_valid(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "deploy-a-relay.md").read_text()
    match = re.search(r"^```toml\n(.*?)^```", doc, re.S | re.M)
    assert match is not None
    (tmp_path / "relay.toml").write_text(match.group(1))
    config = load_config(tmp_path / "relay.toml")
    assert config.tls == Tls(tmp_path / "fullchain.pem", tmp_path / "privkey.pem")
    assert str(config.http_bind) == "[::]:80" and str(config.metrics_bind) == "127.0.0.1:9090"
    assert config.access.mode is AccessMode.EVERYONE and len(config.access.revoked_tokens) == 1
    assert config.limits.client_rx == RateLimit(1048576, 104857, 256)
    assert config.limits.max_connections_per_ip == 128 and config.limits.min_segment_size == 21
    assert config.timers.ping_jitter == (1.0, 5.0) and config.shutdown.try_for_ms == 30000
    dev = load_config(tmp_path / "relay.toml", dev=True, http_bind="127.0.0.1:0", metrics_bind="none")
    assert dev.tls is None and dev.metrics_bind is None and str(dev.http_bind) == "127.0.0.1:0"


@pytest.mark.parametrize(("toml", "message"), [
    ("bind = 1", "unknown config key bind"),
    ("[access]\nmode = \"open\"", "access.mode must be one of"),
    ("[access]\nmode = \"tokens\"", "needs at least one trusted issuer"),
    ("[access]\nallowlist = [\"abc\"]", "access.allowlist"),
    ("[access]\nrevoked_tokens = [\"xyz\"]", "hex token id"),
    ("[limits]\nsend_queue_packets = 0", "must be positive"),
    ("[limits]\nsend_queue_bytes = 1000", "at least two full frames"),
    ("[limits]\nmax_connections_per_ip = 0", "must be positive"),
    ("[limits]\nmin_segment_size = 70000", "at most 65535"),
    ("[limits.client.rx]\nbytes_per_second = 1000\nmin_frame_bytes = 0", "must be positive"),
    ("[limits.client.rx]\nmax_burst_bytes = 5", "unknown config key limits.client.rx.max_burst_bytes"),
    ("[timers]\nping_jitter_secs = [5, 1]", "0 <= low <= high"),
    ("[timers]\nping_interval_secs = true", "must be a number"),
    ("[access]\ndenylist = \"abc\"", "access.denylist must be a list"),
    ("http_bind_addr = \"localhost:80\"", "IP literal"),
    ("[tls]\ncert_path = \"c.pem\"", "both a certificate and a key"),
    ("not toml [", "not valid TOML"),
])
def test_config_errors(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "relay.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tmp_path / "relay.toml", dev=True)


def test_token_roundtrip_and_checks() -> None:
    me = SecretKey.generate().public()
    token = issue_token(ISSUER, me, 3600, now=1_000_000)
    assert token.startswith(PREFIX + ".")
    parsed, _ = parse_token(token)
    assert parsed.issuer == ISSUER.public() and parsed.subject == me and parsed.expires_at == 1_003_600
    trusted = {ISSUER.public()}
    assert verify_token(token, endpoint_id=me, trusted_issuers=trusted, now=1_003_599) == parsed
    with pytest.raises(InvalidToken) as exc:
        verify_token(token, endpoint_id=me, trusted_issuers=trusted, now=1_003_600)
    assert exc.value.kind == "expired"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_token_parser_rejects_garbage_cleanly(text: str) -> None:
    try:
        parse_token(text)
    except InvalidToken as exc:
        assert exc.kind == "malformed"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_token_any_change_breaks_it(data: st.DataObject) -> None:
    me = SecretKey.from_bytes(b"\x07" * 32).public()
    token = issue_token(ISSUER, me, 60, now=1000, token_id=b"\x01" * 16)
    i = data.draw(st.integers(0, len(token) - 1))
    c = data.draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."))
    mutated = token[:i] + c + token[i + 1:]
    if mutated == token:
        return
    with pytest.raises(InvalidToken):
        verify_token(mutated, endpoint_id=me, trusted_issuers={ISSUER.public()}, now=1000)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_token_parser_on_random_payloads(payload: bytes) -> None:
    import base64  # noqa: PLC0415
    b64 = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    text = f"{PREFIX}.{b64}.{'A' * 86}"
    try:
        token, _ = parse_token(text)
    except InvalidToken as exc:
        assert exc.kind == "malformed"
    else:
        assert token.payload() == payload


def test_cli_token_issue_and_inspect(tmp_path: Path) -> None:
    key = tmp_path / "issuer.key"
    ISSUER.save(key)
    me = SecretKey.generate().public()
    out = subprocess.run([sys.executable, "-m", "irohpy", "relay", "token", "issue", "--issuer-key", str(key),
                          "--endpoint", str(me), "--ttl", "600"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    parsed = verify_token(token, endpoint_id=me, trusted_issuers={ISSUER.public()}, now=time.time())
    assert parsed.subject == me and abs(parsed.expires_at - time.time() - 600) < 30
    assert parsed.token_id.hex() in out.stderr
    shown = subprocess.run([sys.executable, "-m", "irohpy", "relay", "token", "inspect", token],
                           capture_output=True, text=True, timeout=30)
    assert json.loads(shown.stdout)["token_id"] == parsed.token_id.hex()
