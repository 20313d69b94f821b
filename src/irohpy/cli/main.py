"""The ``irohpy`` command line.

Every command reports failures as one ``error: ...`` line on stderr and a
non-zero exit status, never a traceback (``-v`` adds the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from irohpy.cli import chat, demo, dns_server, key, lab, pipe, ping, receive, relay, send, ticket
from irohpy.errors import IrohError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

Registrar = Callable[[argparse._SubParsersAction], None]  # type: ignore[type-arg]
COMMANDS: tuple[Registrar, ...] = (
    key.register, ticket.register, ping.register, pipe.register, demo.register, relay.register,
    dns_server.register, lab.register, chat.register, send.register, receive.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irohpy", description="iroh in pure Python: dial endpoints by key.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbosity < 3:
        logging.getLogger("quic").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except KeyboardInterrupt:
        return getattr(args, "interrupt_exit", EXIT_INTERRUPTED)
    except (IrohError, OSError, ValueError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
