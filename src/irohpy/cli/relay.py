"""``irohpy relay``: run a relay server, and mint or read its access tokens.

On start the server prints ``relay listening on URL`` (and ``captive portal on URL``,
``metrics on URL``, ``stun on udp HOST:PORT``, ``quic address discovery on udp HOST:PORT`` when
those listeners run) to stdout, so scripts can read the bound ports.
SIGTERM or SIGINT shut it down gracefully (exit 143 or 130); SIGHUP re-reads the config file's ``[access]``
table and the TLS certificate files.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import signal
import sys

from irohpy.base.fd_limit import raise_fd_limit
from irohpy.base.gc_pacer import pace_gc
from irohpy.base.keys import PublicKey, SecretKey
from irohpy.errors import ConfigError
from irohpy.relay.server.config import ServerConfig, load_config
from irohpy.relay.server.server import RelayServer
from irohpy.relay.server.tokens import issue_token, parse_token

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "relay", help="run an iroh relay server (or mint its access tokens)",
        description="Run an iroh relay server. Plain HTTP with --dev, HTTPS with --tls-cert/--tls-key.")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (see docs/deploy-a-relay.md)")
    parser.add_argument("--dev", action="store_true", help="serve plain HTTP (default [::]:3340), ignore TLS settings")
    parser.add_argument("--http-bind", metavar="ADDR:PORT",
                        help="plain-HTTP listener: the relay with --dev, else the captive-portal check "
                             "(default [::]:80; 'none' to disable it)")
    parser.add_argument("--https-bind", metavar="ADDR:PORT", help="HTTPS listener for the relay (default [::]:443)")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key")
    parser.add_argument("--metrics-bind", "--metrics-addr", metavar="ADDR:PORT|none",
                        help="Prometheus /metrics listener (default 127.0.0.1:9090; with --dev a free port)")
    parser.add_argument("--stun-port", metavar="PORT|none",
                        help="answer STUN binding requests on this UDP port at the relay's address, so "
                             "endpoints learn their public address (default 0: the relay's own port number)")
    parser.add_argument("--enable-quic-addr-discovery", action="store_true",
                        help="serve QUIC address discovery (QAD, what iroh endpoints learn their public "
                             "address from) on UDP; needs TLS")
    parser.add_argument("--quic-bind", metavar="ADDR:PORT",
                        help="UDP address for QUIC address discovery (default: the HTTPS address, port 7842)")
    parser.set_defaults(func=serve)

    actions = parser.add_subparsers(dest="relay_command", metavar="SUBCOMMAND")
    token = actions.add_parser("token", help="access tokens for relays that trust an issuer key")
    tokens = token.add_subparsers(dest="token_command", required=True, metavar="SUBCOMMAND")

    issue = tokens.add_parser("issue", help="mint a token signed by an issuer key; prints it on stdout")
    issue.add_argument("--issuer-key", required=True, metavar="FILE",
                       help="the issuer's secret key file (make one with: irohpy key generate --out FILE)")
    subject = issue.add_mutually_exclusive_group(required=True)
    subject.add_argument("--endpoint", metavar="ID", help="the EndpointId that may use the token")
    subject.add_argument("--any-endpoint", action="store_true", help="let any endpoint use the token")
    issue.add_argument("--ttl", type=int, default=3600, metavar="SECONDS", help="lifetime (default 3600)")
    issue.set_defaults(func=issue_cmd)

    inspect = tokens.add_parser("inspect", help="print a token's fields as JSON (the signature is not checked)")
    inspect.add_argument("token")
    inspect.set_defaults(func=inspect_cmd)


def _iso(unix: int) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat().replace("+00:00", "Z")


def issue_cmd(args: argparse.Namespace) -> int:
    issuer = SecretKey.load(args.issuer_key)
    subject = None if args.any_endpoint else PublicKey.parse(args.endpoint)
    text = issue_token(issuer, subject, args.ttl)
    token, _ = parse_token(text)
    print(text)
    who = "any endpoint" if subject is None else subject.fmt_short()
    print(f"token id {token.token_id.hex()} for {who}, expires {_iso(token.expires_at)}", file=sys.stderr)
    return 0


def inspect_cmd(args: argparse.Namespace) -> int:
    token, _ = parse_token(args.token)
    print(json.dumps({
        "issuer": str(token.issuer),
        "subject": None if token.subject is None else str(token.subject),
        "expires_at": token.expires_at,
        "expires": _iso(token.expires_at),
        "token_id": token.token_id.hex(),
    }, indent=2))
    return 0


def _config(args: argparse.Namespace) -> ServerConfig:
    return load_config(args.config, dev=args.dev, http_bind=args.http_bind, https_bind=args.https_bind,
                       tls_cert=args.tls_cert, tls_key=args.tls_key, metrics_bind=args.metrics_bind,
                       stun_port=args.stun_port, enable_quic_addr_discovery=args.enable_quic_addr_discovery,
                       quic_bind=args.quic_bind)


def _reload(args: argparse.Namespace, server: RelayServer) -> None:
    if args.config is None:
        logger.warning("SIGHUP: there is no --config file to re-read")
        return
    try:
        server.reload(_config(args))
    except ConfigError as exc:
        server.metrics.config_reloads.labels("error").inc()
        logger.error("config reload failed, keeping the running config: %s", exc)
        return
    server.metrics.config_reloads.labels("ok").inc()
    logger.info("config reloaded from %s", args.config)


async def serve(args: argparse.Namespace) -> int:
    """Serve until a signal cancels us (see cli.main); SIGHUP re-reads the config instead."""
    server = RelayServer(_config(args))
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    await server.start()
    try:
        print(f"relay listening on {server.relay_url}", flush=True)
        if server.portal_url:
            print(f"captive portal on {server.portal_url}", flush=True)
        if server.metrics_url:
            print(f"metrics on {server.metrics_url}", flush=True)
        if server.stun_addr:
            print(f"stun on udp {server.stun_addr[0]}:{server.stun_addr[1]}", flush=True)
        if server.quic_addr:
            print(f"quic address discovery on udp {server.quic_addr[0]}:{server.quic_addr[1]}", flush=True)
        loop.add_signal_handler(signal.SIGHUP, _reload, args, server)
        pacer = asyncio.create_task(pace_gc())
        try:
            await asyncio.Event().wait()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            pacer.cancel()
            await asyncio.gather(pacer, return_exceptions=True)
    finally:
        await server.shutdown()
    return 0
