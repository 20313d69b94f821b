"""CPU cost of irohpy's sans-IO QUIC connection (irohpy.quic.connection) on a bulk transfer.

Two connections of the same engine exchange one stream of ``--megabytes`` in memory, with a
simulated clock and no loss; every datagram is handed straight to the other side. The figure
is MB of stream data per CPU second for both ends together (the whole process: TLS, packet
protection, recovery, congestion control, streams), so it reads as "one core can carry this
much between two engine instances". aioquic's connection (C packet protection) is run the same
way for scale. ``python -m bench.quic_conn [--megabytes 20] [--datagram 1200]``.

It also measures the CPU of one connect (both ends, until both completed the handshake) with
the engine's TLS (irohpy's own, full and resumed with 0-RTT) against the same connection with
aioquic's ``tls.Context`` adopted by ``IrohTlsContext`` behind the Handshake protocol
(``tests/aioquic_handshake.py``); rounds of ``--connects`` are interleaved and the median
is reported (``--rounds``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from aioquic.quic.events import StreamDataReceived as AioData

from irohpy.quic import connection as qc
from irohpy.quic.handshake import Handshake, iroh_handshake
from irohpy.quic.packet import peek_dcid
from irohpy.tls import quic_configuration
from irohpy.tls.connection import IrohQuicConnection
from irohpy.tls.keys import private_key, public_key_bytes
from irohpy.tls.resumption import TicketCache, TicketStore
from tests.aioquic_handshake import aioquic_iroh_handshake

CLIENT_SECRET = bytes(range(32))
SERVER_SECRET = bytes(range(32, 64))
SERVER_ID = public_key_bytes(private_key(SERVER_SECRET))
ALPN = b"bench/quic-conn"
ADDR = ("127.0.0.1", 1)
#: Simulated time per exchange round: about one RTT, so the window opens as on a fast LAN.
STEP = 0.001


def _pump(
    send: list[Callable[[float], list[bytes]]],
    recv: list[Callable[[bytes, float], None]],
    timers: list[Callable[[], float | None]],
    fire: list[Callable[[float], None]],
    done: Callable[[], bool],
) -> None:
    now = 0.0
    while not done():
        moved = False
        for i in (0, 1):
            for datagram in send[i](now):
                recv[1 - i](datagram, now)
                moved = True
        if not moved:
            for i in (0, 1):
                t = timers[i]()
                if t is not None and t <= now + STEP:
                    fire[i](max(t, now))
        now += STEP
        if now > 3600.0:
            raise RuntimeError("transfer did not finish")


def run_irohpy(size: int, datagram: int) -> float:
    client = qc.QuicConnection(
        qc.QuicConfig(is_client=True, max_datagram_size=datagram),
        iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID),
    )
    server = qc.QuicConnection(
        qc.QuicConfig(is_client=False, max_datagram_size=datagram),
        iroh_handshake(SERVER_SECRET, is_client=False, alpns=[ALPN]),
    )
    got = [0]

    def server_recv(data: bytes, now: float) -> None:
        server.receive_datagram(data, ADDR, now)
        while (ev := server.next_event()) is not None:
            if isinstance(ev, qc.StreamDataReceived):
                got[0] += len(ev.data)

    def client_recv(data: bytes, now: float) -> None:
        client.receive_datagram(data, ADDR, now)
        while client.next_event() is not None:
            pass

    start = time.process_time()
    client.connect(ADDR, 0.0)
    _pump(
        [client.datagrams_to_send, server.datagrams_to_send],
        [client_recv, server_recv],
        [client.get_timer, server.get_timer],
        [client.handle_timer, server.handle_timer],
        lambda: client.handshake_complete,
    )
    sid = client.open_stream()
    client.send_stream_data(sid, bytes(size), end_stream=True)
    _pump(
        [client.datagrams_to_send, server.datagrams_to_send],
        [client_recv, server_recv],
        [client.get_timer, server.get_timer],
        [client.handle_timer, server.handle_timer],
        lambda: got[0] >= size,
    )
    return time.process_time() - start


def run_aioquic(size: int, datagram: int) -> float:
    client_config = quic_configuration(
        CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID, max_datagram_size=datagram
    )
    server_config = quic_configuration(SERVER_SECRET, is_client=False, alpns=[ALPN], max_datagram_size=datagram)
    client = IrohQuicConnection(configuration=client_config, expected_peer=SERVER_ID)
    holder: list[Any] = []
    got = [0]

    def server_recv(data: bytes, now: float) -> None:
        if not holder:
            dcid = peek_dcid(data, 8)
            holder.append(IrohQuicConnection(configuration=server_config, original_destination_connection_id=dcid))
        holder[0].receive_datagram(data, ADDR, now)
        while (ev := holder[0].next_event()) is not None:
            if isinstance(ev, AioData):
                got[0] += len(ev.data)

    def client_recv(data: bytes, now: float) -> None:
        client.receive_datagram(data, ADDR, now)
        while client.next_event() is not None:
            pass

    def server_send(now: float) -> list[bytes]:
        return [d for d, _ in holder[0].datagrams_to_send(now)] if holder else []

    def client_send(now: float) -> list[bytes]:
        return [d for d, _ in client.datagrams_to_send(now)]

    def server_timer() -> float | None:
        return holder[0].get_timer() if holder else None

    def server_fire(now: float) -> None:
        holder[0].handle_timer(now)

    start = time.process_time()
    client.connect(ADDR, now=0.0)
    _pump(
        [client_send, server_send],
        [client_recv, server_recv],
        [client.get_timer, server_timer],
        [client.handle_timer, server_fire],
        lambda: client._handshake_complete,
    )
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, bytes(size), end_stream=True)
    _pump(
        [client_send, server_send],
        [client_recv, server_recv],
        [client.get_timer, server_timer],
        [client.handle_timer, server_fire],
        lambda: got[0] >= size,
    )
    return time.process_time() - start


def _connect_once(client_hs: Handshake, server_hs: Handshake, early: bytes) -> None:
    """One connect in memory; with ``early``, the client writes it before the handshake."""
    client = qc.QuicConnection(qc.QuicConfig(is_client=True), client_hs)
    server = qc.QuicConnection(qc.QuicConfig(is_client=False), server_hs)
    client.connect(ADDR, 0.0)
    if early:
        client.send_stream_data(client.open_stream(), early, end_stream=True)
    now = 0.0
    while not (client.handshake_complete and server.handshake_complete):
        for datagram in client.datagrams_to_send(now):
            server.receive_datagram(datagram, ADDR, now)
        for datagram in server.datagrams_to_send(now):
            client.receive_datagram(datagram, ADDR, now)
        now += STEP
        if now > 10.0:
            raise RuntimeError("handshake did not finish")
    # Let the NewSessionTicket reach the client.
    for datagram in server.datagrams_to_send(now):
        client.receive_datagram(datagram, ADDR, now)
    if early and not client.early_data_accepted:
        raise RuntimeError("0-RTT was not accepted")


def run_connects(count: int) -> dict[str, float]:
    """CPU seconds per connect, both ends, for each kind of handshake."""
    cache, store = TicketCache(), TicketStore()
    out: dict[str, float] = {}

    def ours_full() -> None:
        _connect_once(
            iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID),
            iroh_handshake(SERVER_SECRET, is_client=False, alpns=[ALPN]),
            b"",
        )

    def ours_resumed() -> None:
        _connect_once(
            iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID, ticket_cache=cache),
            iroh_handshake(SERVER_SECRET, is_client=False, alpns=[ALPN], ticket_store=store),
            b"request" if len(cache) else b"",
        )

    def adapter_full() -> None:
        _connect_once(
            aioquic_iroh_handshake(CLIENT_SECRET, is_client=True, alpns=[ALPN], expected_peer=SERVER_ID),
            aioquic_iroh_handshake(SERVER_SECRET, is_client=False, alpns=[ALPN]),
            b"",
        )

    ours_resumed()  # the first ticket
    for name, fn in (
        ("ours, full", ours_full),
        ("ours, resumed + 0-RTT", ours_resumed),
        ("aioquic tls.Context adapter, full", adapter_full),
    ):
        start = time.process_time()
        for _ in range(count):
            fn()
        out[name] = (time.process_time() - start) / count
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=20.0)
    parser.add_argument("--datagram", type=int, default=1200)
    parser.add_argument("--connects", type=int, default=50, help="connects per kind and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = int(args.megabytes * 1_000_000)
    for name, fn in (("irohpy.quic", run_irohpy), ("aioquic", run_aioquic)):
        cpu = fn(size, args.datagram)
        print(f"{name:12} {size / 1e6:.0f} MB in {cpu:.2f} CPU s: {size / 1e6 / cpu:.1f} MB per CPU second")
    if args.connects > 0:
        rounds = [run_connects(args.connects) for _ in range(args.rounds)]
        print(f"connect, CPU µs per connect (both ends, median of {args.rounds} rounds of {args.connects}):")
        for name in rounds[0]:
            values = [r[name] * 1e6 for r in rounds]
            print(f"  {name:36} {statistics.median(values):7.0f}  ({min(values):.0f}..{max(values):.0f})")


if __name__ == "__main__":
    main()
