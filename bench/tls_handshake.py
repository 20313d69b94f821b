"""CPU per TLS handshake: irohpy's own TLS 1.3 (irohpy.tls.handshake) against aioquic's
``tls.Context`` as irohpy uses it today (IrohTlsContext), both ends in this process.

Each sample runs ``--batch`` handshakes of one kind back to back and divides the process CPU
time; kinds are interleaved round by round (order rotating) so drift and load hit all alike,
and the median of ``--rounds`` samples is reported with min and max. Kinds:

- ``full``: a fresh mutual raw-public-key handshake (client + server);
- ``resumed``: PSK-DHE resumption with a ticket from a previous handshake, 0-RTT offered
  and accepted (what irohpy does on reconnect);
- ``aioquic (X25519 only)``: today's context with its extra P-256/P-384 key shares removed,
  to show how much of the difference is key generation rather than Python;
- ``crypto floor``: only the public-key operations of a full handshake, the part no TLS
  implementation can avoid.

``python -m bench tls [--rounds 15] [--batch 40] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from irohpy.tls.context import IrohTlsContext
from irohpy.tls.handshake import ClientHandshake, ServerHandshake
from irohpy.tls.keys import public_key_bytes
from irohpy.tls.name import server_name
from irohpy.tls.resumption import MAX_EARLY_DATA, ResumptionTicket, TicketStore

ALPN = b"bench/tls/0"
TRANSPORT_PARAMETERS = bytes(60)  # about the size of iroh's
CLIENT_KEY = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
SERVER_KEY = Ed25519PrivateKey.from_private_bytes(bytes([2]) * 32)
SERVER_ID = public_key_bytes(SERVER_KEY)


class _Aioquic:
    """An IrohTlsContext driven the way aioquic's QUIC connection drives it."""

    def __init__(self, *, is_client: bool, x25519_only: bool, ticket: Any = None, store: Any = None) -> None:
        ctx = tls.Context(
            is_client=is_client,
            alpn_protocols=[ALPN.decode()],
            max_early_data=None if is_client else MAX_EARLY_DATA,
            server_name=server_name(SERVER_ID) if is_client else None,
        )
        ctx.certificate_private_key = CLIENT_KEY if is_client else SERVER_KEY
        ctx.handshake_extensions = [(tls.ExtensionType.QUIC_TRANSPORT_PARAMETERS, TRANSPORT_PARAMETERS)]
        self.tickets: list[Any] = []
        if is_client:
            ctx.session_ticket = ticket
            ctx.new_session_ticket_cb = self.tickets.append
        else:
            ctx.get_session_ticket_cb = lambda label: store.pop(label, None)
            ctx.new_session_ticket_cb = lambda t: store.__setitem__(t.ticket, t)
        self.ctx = IrohTlsContext.adopt(ctx, SERVER_ID if is_client else None)
        if x25519_only:
            self.ctx._supported_groups = [tls.Group.X25519]
        self._output: list[tuple[int, bytes]] = []

    def start(self) -> None:
        self.receive(0, b"")

    def receive(self, epoch: int, data: bytes) -> None:
        bufs = {e: Buffer(capacity=4096) for e in tls.Epoch}
        self.ctx.handle_message(data, bufs)
        for e, buf in bufs.items():
            if buf.tell():
                self._output.append((e.value, buf.data))

    def take_output(self) -> list[tuple[int, bytes]]:
        out, self._output = self._output, []
        return out

    @property
    def complete(self) -> bool:
        return self.ctx.state is tls.State.CLIENT_POST_HANDSHAKE


def _pump(client: Any, server: Any) -> None:
    client.start()
    moved = True
    while moved:
        moved = False
        for src, dst in ((client, server), (server, client)):
            for epoch, data in src.take_output():
                moved = True
                dst.receive(epoch, data)
    if not client.complete:
        raise RuntimeError("handshake did not complete")


def _ours_ticket() -> tuple[TicketStore, Callable[[], ResumptionTicket]]:
    store = TicketStore()

    def fresh() -> ResumptionTicket:
        client = ClientHandshake(CLIENT_KEY, alpns=[ALPN], transport_parameters=TRANSPORT_PARAMETERS,
                                 expected_peer=SERVER_ID)
        server = ServerHandshake(SERVER_KEY, alpns=[ALPN], transport_parameters=TRANSPORT_PARAMETERS, tickets=store)
        _pump(client, server)
        return client.take_tickets()[0]

    return store, fresh


def _ours(resumed: bool) -> Callable[[int], None]:
    store, fresh = _ours_ticket()

    def run(n: int) -> None:
        tickets = [fresh() for _ in range(n)] if resumed else [None] * n
        start_cpu[0] = time.process_time_ns()
        for ticket in tickets:
            client = ClientHandshake(CLIENT_KEY, alpns=[ALPN], transport_parameters=TRANSPORT_PARAMETERS,
                                     expected_peer=SERVER_ID, ticket=ticket)
            server = ServerHandshake(SERVER_KEY, alpns=[ALPN], transport_parameters=TRANSPORT_PARAMETERS,
                                     tickets=store)
            _pump(client, server)
            if resumed and not (client.session_resumed and client.early_data_accepted):
                raise RuntimeError("resumption with 0-RTT did not happen")

    return run


def _aioquic(resumed: bool, x25519_only: bool) -> Callable[[int], None]:
    store: dict[bytes, Any] = {}

    def fresh() -> Any:
        client = _Aioquic(is_client=True, x25519_only=x25519_only)
        _pump(client, _Aioquic(is_client=False, x25519_only=x25519_only, store=store))
        return client.tickets[0]

    def run(n: int) -> None:
        tickets = [fresh() for _ in range(n)] if resumed else [None] * n
        start_cpu[0] = time.process_time_ns()
        for ticket in tickets:
            client = _Aioquic(is_client=True, x25519_only=x25519_only, ticket=ticket)
            _pump(client, _Aioquic(is_client=False, x25519_only=x25519_only, store=store))
            if resumed and not (client.ctx.session_resumed and client.ctx.early_data_accepted):
                raise RuntimeError("resumption with 0-RTT did not happen")

    return run


def _crypto_floor() -> Callable[[int], None]:
    """Only the public-key operations a full handshake needs, both ends: 2 Ed25519 signatures,
    2 verifications, 2 X25519 key pairs and 2 exchanges. No implementation can go below it."""
    message = bytes(130)
    signature = CLIENT_KEY.sign(message)
    verifier = CLIENT_KEY.public_key()

    def run(n: int) -> None:
        start_cpu[0] = time.process_time_ns()
        for _ in range(n):
            for _side in range(2):
                CLIENT_KEY.sign(message)
                verifier.verify(signature, message)
                X25519PrivateKey.generate().exchange(X25519PrivateKey.generate().public_key())

    return run


start_cpu = [0]
"""Set by each runner once its untimed setup (fresh tickets) is done."""

KINDS: dict[str, Callable[[], Callable[[int], None]]] = {
    "ours full": lambda: _ours(False),
    "aioquic full": lambda: _aioquic(False, False),
    "aioquic (X25519 only) full": lambda: _aioquic(False, True),
    "ours resumed": lambda: _ours(True),
    "aioquic resumed": lambda: _aioquic(True, False),
    "aioquic (X25519 only) resumed": lambda: _aioquic(True, True),
    "crypto floor (full)": _crypto_floor,
}


def measure(rounds: int, batch: int) -> dict[str, list[float]]:
    """CPU microseconds per handshake (client + server), one sample per kind per round."""
    runners = {name: make() for name, make in KINDS.items()}
    names = list(runners)
    for name in names:
        runners[name](2)  # warm up imports and caches
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            runners[name](batch)
            samples[name].append((time.process_time_ns() - start_cpu[0]) / batch / 1000)
    return samples


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved samples per kind (default 15)")
    parser.add_argument("--batch", type=int, default=40, help="handshakes per sample (default 40)")
    parser.add_argument("--json", type=Path, help="write raw samples here")
    args = parser.parse_args(argv)
    samples = measure(args.rounds, args.batch)
    print(f"CPU per handshake, client + server, µs (median of {args.rounds} x {args.batch}; min..max)")
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, values in samples.items():
        print(f"  {name:32s} {medians[name]:8.0f}   ({min(values):.0f}..{max(values):.0f})")
    for kind in ("full", "resumed"):
        ours, theirs = samples[f"ours {kind}"], samples[f"aioquic {kind}"]
        paired = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
        print(f"  ours / aioquic, {kind}: {medians[f'ours {kind}'] / medians[f'aioquic {kind}']:.2f}"
              f" (median of per-round ratios {paired:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"rounds": args.rounds, "batch": args.batch, "samples_us": samples}, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
