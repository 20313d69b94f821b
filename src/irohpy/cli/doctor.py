"""``irohpy doctor``: iroh-doctor's commands for irohpy (report, accept, connect, plot).

Nothing public is contacted unless asked: ``report`` and ``accept`` need ``--relay URL`` (or
``--relay default`` for number 0's relays), and ``connect`` uses the relay its ticket names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

from irohpy.base.relay_url import RelayUrl
from irohpy.base.ticket import EndpointTicket
from irohpy.cli.common import (LOOKUP_HELP, RELAY_TOKEN_ENV, SECRET_ENV, add_endpoint_args, endpoint_from_args, eprint,
                               lookups_from_args, positive_int, relay_mode, secret_from_args, ticket_for)
from irohpy.cli.metrics_addr import add_metrics_arg, metrics_served
from irohpy.doctor import plot, speed
from irohpy.doctor.report import format_report, run_report
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import DoctorError
from irohpy.metrics import Registry
from irohpy.protocols.router import Router
from irohpy.relay import defaults

RELAY_HELP = "relay to test against: a URL, or 'default' for number 0's public relays (repeatable)"


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10M)") from None
    if not 0 < value <= speed.MAX_TRANSFER:
        raise argparse.ArgumentTypeError(f"size must be between 1 byte and {speed.MAX_TRANSFER >> 30} GiB")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("doctor", help="diagnose connectivity: report, speed tests, plots")
    cmds = parser.add_subparsers(dest="doctor_command", required=True, metavar="COMMAND")

    report = cmds.add_parser(
        "report", help="interfaces, relay latency (HTTPS and QUIC), NAT type, port mapping, captive portal",
        description="Relay certificates (HTTPS and QUIC address discovery) are checked against the "
                    "system's roots; SSL_CERT_FILE or SSL_CERT_DIR name others.")
    report.add_argument("--relay", action="append", required=True, metavar="URL|default", help=RELAY_HELP)
    report.add_argument("--json", action="store_true", help="print JSON instead of text")
    report.add_argument("--portmap-timeout", type=float, default=1.0, metavar="SECONDS",
                        help="how long to wait for the gateway's UPnP/PCP/NAT-PMP answers (default 1)")
    report.set_defaults(func=run_report_cmd)

    accept = cmds.add_parser("accept", help="print a ticket and answer `doctor connect` until Ctrl-C")
    add_endpoint_args(accept)
    add_metrics_arg(accept)
    accept.set_defaults(func=accept_cmd, relay=None)

    connect = cmds.add_parser("connect", help="latency and throughput to `doctor accept`: over the relay, then direct")
    connect.add_argument("ticket", metavar="TICKET")
    connect.add_argument("--relay", metavar="URL|default",
                         help="relays for our side (default: the relay the ticket names)")
    connect.add_argument("--relay-token", metavar="TOKEN", default=os.environ.get(RELAY_TOKEN_ENV),
                         help=f"access token presented to the relay (default ${RELAY_TOKEN_ENV})")
    connect.add_argument("--key", metavar="FILE",
                         help=f"secret key file: our EndpointId in both phases (a relay that admits by id "
                              f"needs it); default ${SECRET_ENV} (hex), else a new key per phase")
    connect.add_argument("--lookup", action="append", metavar="n0|none|PKARR_URL|dns:ZONE@HOST:PORT",
                         help=LOOKUP_HELP)
    connect.add_argument("--ipv4-addr", metavar="ADDR:PORT", default="0.0.0.0:0", help="IPv4 socket to bind")
    connect.add_argument("--ipv6-addr", metavar="[ADDR]:PORT", default="[::]:0",
                         help="IPv6 socket to bind; 'none' to skip IPv6")
    connect.add_argument("--size", type=_size, default=10 << 20, help="bytes per throughput run (default 10M)")
    connect.add_argument("--pings", type=positive_int, default=20, help="idle pings per phase (default 20)")
    connect.add_argument("--direct-timeout", type=float, default=10.0, metavar="SECONDS",
                         help="how long to wait for a direct path (default 10)")
    connect.add_argument("--record", type=Path, metavar="FILE", help="write the run as JSON for `doctor plot`")
    connect.add_argument("--json", action="store_true", help="print the run as JSON instead of a table")
    add_metrics_arg(connect)
    connect.set_defaults(func=connect_cmd)

    plot_p = cmds.add_parser("plot", help="draw a `connect --record` file as HTML (inline SVG) or PNG")
    plot_p.add_argument("record", type=Path, metavar="RECORD")
    plot_p.add_argument("--out", type=Path, required=True, metavar="FILE.html|FILE.png")
    plot_p.set_defaults(func=plot_cmd)


def _relay_urls(values: list[str]) -> list[RelayUrl]:
    urls: list[RelayUrl] = []
    for value in values:
        urls += [RelayUrl.parse(u) for u in defaults.PROD_RELAYS] if value == "default" else [RelayUrl.parse(value)]
    return urls


async def run_report_cmd(args: argparse.Namespace) -> int:
    report = await run_report(_relay_urls(args.relay), portmap_timeout=args.portmap_timeout)
    print(json.dumps(report.to_json(), indent=1) if args.json else format_report(report), flush=True)
    return 0


async def accept_cmd(args: argparse.Namespace) -> int:
    if args.relay is None:
        raise DoctorError("pass --relay URL (your relay), --relay default (number 0's relays) or --relay disabled")
    endpoint = await endpoint_from_args(args, [speed.ALPN])

    def on_conn(conn: Connection, what: str) -> None:
        eprint(f"{what}: {conn.remote_id.fmt_short() if conn.remote_id else '?'}")

    async with metrics_served(args, endpoint.metrics()):
        async with Router.builder(endpoint).accept(speed.ALPN, speed.DoctorProtocol(on_conn)).spawn():
            print(ticket_for(endpoint), flush=True)
            eprint("waiting for `irohpy doctor connect TICKET`; Ctrl-C to stop")
            await asyncio.Event().wait()
    return 0


async def connect_cmd(args: argparse.Namespace) -> int:
    ticket = EndpointTicket.parse(args.ticket.strip())
    target = ticket.addr
    relays = target.relay_urls()
    if args.relay:
        mode = relay_mode(args.relay, args.relay_token)
    elif relays:
        mode = relay_mode(str(relays[0]), args.relay_token)
    else:
        mode = relay_mode("disabled")
    binds = [args.ipv4_addr] + ([] if args.ipv6_addr == "none" else [args.ipv6_addr])
    console = Console(stderr=True)
    progress = Progress(TextColumn("{task.description:<8}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TextColumn("{task.fields[status]}"), console=console, transient=False,
                        disable=not console.is_terminal)
    tasks: dict[str, TaskID] = {}

    def listener(event: str, phase: speed.Phase, done: int, total: int, rtt: float | None) -> None:
        if phase.name not in tasks:
            tasks[phase.name] = progress.add_task(phase.name, total=total, status="")
        task = tasks[phase.name]
        status = f"rtt {rtt:.1f} ms" if rtt is not None else ""
        if event in ("done", "failed"):
            status = phase.note or f"done, {phase.path}"
        progress.update(task, completed=done, status=status)

    registry = Registry()

    def on_bound(name: str, endpoint: Endpoint) -> None:
        registry.sub_registry(labels={"phase": name}).register_all(endpoint.metrics().groups())

    secret = secret_from_args(args) if args.key or os.environ.get(SECRET_ENV) else None
    run = speed.ConnectRun(target, mode, size=args.size, pings=args.pings, direct_timeout=args.direct_timeout,
                           bind_addrs=binds, listener=listener, secret_key=secret,
                           address_lookup=lambda key: lookups_from_args(args, key), on_bound=on_bound)
    try:
        async with metrics_served(args, registry):
            with progress:
                record = await run.run()
    finally:
        await run.close()
    if args.record is not None:
        record.save(args.record)
    if args.json:
        print(json.dumps(record.to_json(), indent=1), flush=True)
    else:
        table = Table(title=f"irohpy doctor: {target.id.fmt_short()}")
        for column in speed.COLUMNS:
            table.add_column(column)
        for row in speed.summary_rows(record):
            table.add_row(*row)
        Console(file=sys.stdout).print(table)
    if not any(p.seconds for p in record.phases):
        raise DoctorError("no phase completed: " + "; ".join(p.note for p in record.phases if p.note))
    return 0


def plot_cmd(args: argparse.Namespace) -> int:
    record = speed.Record.load(args.record)
    suffix = args.out.suffix.lower()
    if suffix in (".html", ".htm"):
        args.out.write_text(plot.to_html(record))
    elif suffix == ".png":
        args.out.write_bytes(plot.to_png(record))
    else:
        raise DoctorError(f"--out must end in .html or .png, not {args.out.name!r}")
    eprint(f"wrote {args.out}")
    return 0
