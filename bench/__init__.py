"""Loopback benchmarks: irohpy against Rust iroh, raw aioquic and TCP + TLS.

Run with ``make bench`` (or ``python -m bench --help``). Every implementation is
measured the same way, in two processes, by the drivers in ``bench.common``.
"""
