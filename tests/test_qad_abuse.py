"""The relay's QAD service under attack, on loopback: junk, Initial floods and handshake floods.

An unauthenticated attacker may send anything to UDP 7842. It must cost the relay no state for
a spoofable source (every Initial gets a stateless Retry first), no more than the per-IP limit
of connections for a real one, and a well-behaved endpoint must still learn its address.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from pathlib import Path

from irohpy.endpoint.engine import QuicEngine
from irohpy.endpoint.qad import ALPN, client_config
from irohpy.quic import connection as qc
from irohpy.quic.handshake import iroh_handshake
from irohpy.tls.webpki import CaTlsConfig, WebPkiClientHandshake
from tests.helpers import bind
from tests.test_qad import CA, qad_relay, relay_mode, until

GOOD_CLIENT_LIMIT = 60.0
JUNK = 20_000
INITIALS = 400
HANDSHAKES = 6
PER_IP = 2
ATTACKER_LIMIT = 60.0


def _initials(n: int) -> list[bytes]:
    """Valid, decryptable client Initials (real TLS ClientHellos), each with its own DCID."""
    out = []
    for _ in range(n):
        hs = iroh_handshake(os.urandom(32), is_client=True, alpns=[ALPN], expected_peer=os.urandom(32))
        conn = qc.QuicConnection(qc.QuicConfig(is_client=True), hs)
        conn.connect(("127.0.0.1", 1), 0.0)
        out.append(conn.datagrams_to_send(0.0)[0])
    return out


async def _flood(src: str, target: tuple[str, int], datagrams: list[bytes], stop: asyncio.Event) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    sock.setblocking(False)
    sent = 0
    try:
        while not stop.is_set():
            for data in datagrams:
                try:
                    sock.sendto(data, target)
                    sent += 1
                except BlockingIOError:
                    pass
            await asyncio.sleep(0.01)
    finally:
        sock.close()
    return sent


async def test_floods_cost_no_state_and_a_good_client_still_learns_its_address(tmp_path: Path) -> None:
    rng = random.Random(14)
    junk = [rng.randbytes(rng.randint(1, 1500)) for _ in range(JUNK // 10)]
    initials = _initials(INITIALS)
    async with qad_relay(tmp_path, qad_max_connections_per_ip=PER_IP) as server:
        qad = server._qad
        assert qad is not None and server.quic_addr is not None
        target = ("127.0.0.1", server.quic_addr[1])
        stop = asyncio.Event()
        floods = [asyncio.ensure_future(_flood("127.0.0.3", target, junk, stop)),
                  asyncio.ensure_future(_flood("127.0.0.4", target, initials, stop))]
        # An attacker that does complete handshakes, from one address of its own.
        attacker = await QuicEngine.bind(os.urandom(32), host="127.0.0.2")
        ca = CaTlsConfig.custom_roots([CA.root_pem])
        conns = [attacker.dial_with(target, WebPkiClientHandshake(server_name="127.0.0.1", alpns=[ALPN], ca=ca),
                                    client_config(8)) for _ in range(HANDSHAKES)]
        peak = 0
        try:
            await asyncio.sleep(0.5)  # the floods are running before the good client starts
            start = time.monotonic()
            ep = await bind(relay_mode=relay_mode(server), ca_tls_config=ca)
            try:
                direct = ep._direct
                assert direct is not None

                def learned() -> bool:
                    nonlocal peak
                    peak = max(peak, qad._per_ip.get("127.0.0.2", 0))
                    return bool(direct.qad)

                await until(learned, GOOD_CLIENT_LIMIT)
                took = time.monotonic() - start
                assert direct.qad == {("127.0.0.1", ep.bound_sockets()[0][1])}
            finally:
                await ep.close()
            # The attacker's handshakes, metered at its address, end up admitted up to the
            # per-IP limit and refused beyond it (PTO retransmissions get them through).
            refused = server.metrics.qad_refused.labels("per_ip_limit")
            await until(lambda: learned() and refused.get() >= HANDSHAKES - qad.limits.max_connections_per_ip,
                        ATTACKER_LIMIT)
        finally:
            stop.set()
            sent = sum(await asyncio.gather(*floods))
            for conn in conns:
                conn.close(1, b"finished")
            await attacker.close()
        established = sum(1 for c in conns if c.alpn is not None)
        stats = qad._core.stats
        m = server.metrics
        print(f"good client learned its address in {took:.2f} s under {sent} flood datagrams; "
              f"attacker handshakes established {established}/{HANDSHAKES}, peak per-IP {peak}; "
              f"retries {stats.retries}, stateless_limited {stats.stateless_limited}, dropped {stats.dropped}, "
              f"refused per_ip {m.qad_refused.labels('per_ip_limit').get()}")
        assert took < GOOD_CLIENT_LIMIT
        assert peak <= qad.limits.max_connections_per_ip and established <= qad.limits.max_connections_per_ip
        assert m.qad_refused.labels("per_ip_limit").get() >= HANDSHAKES - qad.limits.max_connections_per_ip
        # The flooded Initials never followed their Retry: none became a connection.
        assert m.qad_incoming.get() <= qad.limits.max_connections_per_ip + 1
        assert stats.retries > 0 and stats.dropped > 0
