"""``--metrics-addr ADDR:PORT``: serve a command's metrics registry for Prometheus while it runs."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

from irohpy.cli.common import eprint
from irohpy.metrics import Registry, parse_addr, serve_metrics


def add_metrics_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-addr", metavar="ADDR:PORT", type=_addr,
                        help="serve Prometheus metrics at http://ADDR:PORT/metrics while running")


def _addr(text: str) -> str:
    parse_addr(text)
    return text


@contextlib.asynccontextmanager
async def metrics_served(args: argparse.Namespace, registry: Registry) -> AsyncIterator[None]:
    """Serve ``registry`` for the block when ``--metrics-addr`` was given (the URL goes to stderr)."""
    if not getattr(args, "metrics_addr", None):
        yield
        return
    async with serve_metrics(args.metrics_addr, registry) as url:
        eprint(f"metrics on {url}")
        yield
