"""``irohpy dns-server``: a pkarr relay plus the DNS server that answers from it.

On start it prints ``pkarr http on URL``, ``dns on udp+tcp HOST:PORT`` and (unless disabled)
``metrics on URL`` to stdout, so scripts can read the bound ports. SIGTERM or SIGINT stop it (exit 143 or 130).
"""

from __future__ import annotations

import argparse
import asyncio

from irohpy.base.fd_limit import raise_fd_limit
from irohpy.base.gc_pacer import pace_gc
from irohpy.dns_server.config import load_config
from irohpy.dns_server.server import DnsServer


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "dns-server", help="run a pkarr relay and DNS server for endpoint lookup",
        description="Serve pkarr signed packets over HTTP (PUT/GET /pkarr/<z32>) and answer "
                    "_iroh.<z32>.<origin> TXT queries over UDP and TCP.")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (see docs/dns-server.md)")
    parser.add_argument("--dev", action="store_true",
                        help="loopback ports (HTTP 127.0.0.1:8080, DNS 127.0.0.1:5300, metrics free), no rate limit, "
                             "a database in the temp dir unless --db is given")
    parser.add_argument("--http-bind", metavar="ADDR:PORT", help="pkarr HTTP listener (default [::]:8080)")
    parser.add_argument("--dns-bind", metavar="ADDR:PORT", help="DNS UDP+TCP listener (default [::]:53)")
    parser.add_argument("--origin", action="append", metavar="ZONE",
                        help="zone to answer for, repeatable (default irohdns.example.)")
    parser.add_argument("--db", metavar="PATH", help="SQLite database (default in the user's data dir)")
    parser.add_argument("--metrics-bind", "--metrics-addr", metavar="ADDR:PORT|none",
                        help="Prometheus /metrics listener (default 127.0.0.1:9117; with --dev a free port)")
    parser.set_defaults(func=serve)


async def serve(args: argparse.Namespace) -> int:
    config = load_config(args.config, dev=args.dev, http_bind=args.http_bind, dns_bind=args.dns_bind,
                         metrics_bind=args.metrics_bind, origins=args.origin, db_path=args.db)
    raise_fd_limit()
    async with DnsServer(config) as server:
        print(f"pkarr http on {server.pkarr_url}", flush=True)
        print(f"dns on udp+tcp {server.dns_addr}", flush=True)
        if server.metrics_url:
            print(f"metrics on {server.metrics_url}", flush=True)
        pacer = asyncio.create_task(pace_gc())
        try:
            await asyncio.Event().wait()
        finally:
            pacer.cancel()
            await asyncio.gather(pacer, return_exceptions=True)
    return 0
