"""Per-packet cost of the QUIC wire layer (irohpy.quic), on full-size 1-RTT packets.

Packets are 1452-byte datagrams (iroh's MTU ceiling) with an 8-byte CID, handled in bursts
the way the engine will: ``seal`` builds the header and seals a burst with one batched
header-protection call; ``open`` parses, unprotects the burst's headers with one call and
decrypts; ``frames`` decodes the STREAM payload; ``masks`` compares one ECB call per burst
with one call per packet. aioquic's C packet protection (the engine we replace) is shown for
scale. ``python -m bench.quic_wire [--burst 64] [--rounds 200]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from aioquic.quic.crypto import CryptoContext
from aioquic.tls import CipherSuite

from irohpy.quic import crypto, frames, packet
from irohpy.quic.buffer import Writer

DATAGRAM = 1452
CID = b"\x11" * 8


def _per_item(rounds: int, items: int, fn: Callable[[], object]) -> float:
    """Best of ``rounds`` runs, in microseconds of CPU per item."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time_ns()
        fn()
        best = min(best, time.process_time_ns() - start)
    return best / items / 1000


def _payload() -> bytes:
    w = Writer(DATAGRAM)
    size = DATAGRAM - (1 + len(CID) + 2) - crypto.TAG_SIZE
    header = frames.stream_header_size(4, 1 << 20, 0, with_length=False)
    frames.push_stream_header(w, 4, 1 << 20, 0, fin=False, with_length=False)
    w.push_bytes(os.urandom(size - header))
    return w.getvalue()


def run(suite: int, burst: int, rounds: int) -> dict[str, float]:
    secret = os.urandom(32)
    prot = crypto.Protection(suite, secret)
    payload = _payload()
    pns = list(range(1000, 1000 + burst))

    def seal() -> list[bytearray]:
        return packet.seal_packets(
            prot.key, prot.hp, [(packet.build_short_header(CID, pn, 2), payload, pn) for pn in pns]
        )

    datagrams = [bytes(d) for d in seal()]
    assert len(datagrams[0]) == DATAGRAM

    def open_burst() -> None:
        parts = [packet.split_datagram(d, len(CID))[0] for d in datagrams]
        packet.unprotect_headers(parts, prot.hp, 999)
        for p in parts:
            packet.open_packet(prot.key, p)

    def decode() -> None:
        for _ in range(burst):
            frames.decode_frames(payload, packet.PACKET_ONE_RTT)

    samples = b"".join(d[len(CID) + 5 : len(CID) + 21] for d in datagrams)

    def masks_batched() -> None:
        prot.hp.masks(samples)

    def masks_single() -> None:
        for i in range(0, len(samples), 16):
            prot.hp.masks(samples[i : i + 16])

    theirs = CryptoContext()
    theirs.setup(cipher_suite=CipherSuite(suite), secret=secret, version=packet.VERSION_1)
    header = packet.build_short_header(CID, 1000, 2)

    def aioquic_seal() -> None:
        for pn in pns:
            theirs.encrypt_packet(packet.build_short_header(CID, pn, 2), payload, pn)

    protected = theirs.encrypt_packet(header, payload, 1000)

    def aioquic_open() -> None:
        for _ in pns:
            theirs.decrypt_packet(protected, len(CID) + 1, 1000)

    return {
        "seal": _per_item(rounds, burst, seal),
        "open": _per_item(rounds, burst, open_burst),
        "frames": _per_item(rounds, burst, decode),
        "masks, one call per burst": _per_item(rounds, burst, masks_batched),
        "masks, one call per packet": _per_item(rounds, burst, masks_single),
        "aioquic seal": _per_item(rounds, burst, aioquic_seal),
        "aioquic open": _per_item(rounds, burst, aioquic_open),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=64, help="packets per burst (default 64)")
    parser.add_argument("--rounds", type=int, default=200, help="runs per figure, the best is kept")
    args = parser.parse_args()
    suites = {
        "AES-128-GCM": crypto.AES_128_GCM_SHA256,
        "AES-256-GCM": crypto.AES_256_GCM_SHA384,
        "ChaCha20-Poly1305": crypto.CHACHA20_POLY1305_SHA256,
    }
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}; "
          f"{DATAGRAM}-byte 1-RTT packets in bursts of {args.burst}; CPU µs per packet (best of {args.rounds})")
    results = {name: run(suite, args.burst, args.rounds) for name, suite in suites.items()}
    rows = list(next(iter(results.values())))
    print("| step | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for row in rows:
        print(f"| {row} | " + " | ".join(f"{r[row]:.2f}" for r in results.values()) + " |")
    aes = results["AES-128-GCM"]
    per_packet = aes["seal"] + aes["open"] + aes["frames"]
    print(f"\nAES-128-GCM seal + open + decode: {per_packet:.2f} µs per packet, "
          f"{DATAGRAM / per_packet:.0f} MB/s of datagrams per CPU for the wire layer alone")


if __name__ == "__main__":
    main()
