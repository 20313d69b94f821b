"""The ``irohpy`` command line.

Every command reports failures as one ``error: ...`` line on stderr and a
non-zero exit status, never a traceback (``-v`` adds the traceback).
Ctrl-C, SIGTERM and SIGHUP all cancel the command, so its cleanup runs, and
exit with 128 + the signal number (130, 143, 129), as shells expect.

Only the module of the command being run is imported, so ``irohpy --help``
starts fast; the others appear in the help from the table below.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Awaitable, Sequence

from irohpy import __version__
from irohpy.errors import IrohError

EXIT_ERROR = 1
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# name -> (module with register(sub), help, aliases)
COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "key": ("irohpy.cli.key", "generate and inspect secret key files", ()),
    "ticket": ("irohpy.cli.ticket", "work with tickets", ()),
    "ping": ("irohpy.cli.ping", "measure the round trip to another endpoint (iroh/ping/0)", ()),
    "pipe": ("irohpy.cli.pipe", "dumbpipe: pipes and port forwarding over iroh", ()),
    "demo": ("irohpy.cli.demo", "run a local relay and two endpoints; show a connection (loopback only)", ()),
    "relay": ("irohpy.cli.relay", "run an iroh relay server (or mint its access tokens)", ()),
    "dns-server": ("irohpy.cli.dns_server", "run a pkarr relay and DNS server for endpoint lookup", ()),
    "lab": ("irohpy.cli.lab", "run the NAT lab's scenarios (Linux, root)", ()),
    "chat": ("irohpy.cli.chat", "chat in a gossip room on stdin/stdout", ()),
    "send": ("irohpy.cli.send", "share a file or directory until Ctrl-C (sendme)", ()),
    "receive": ("irohpy.cli.receive", "fetch what `irohpy send` shares (sendme)", ("recv",)),
    "doctor": ("irohpy.cli.doctor", "diagnose connectivity: report, speed tests, plots", ()),
    "doc": ("irohpy.cli.doc", "documents: create, set, get, ls, share, join, watch (iroh-docs)", ()),
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named on the line (the first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            for name, (_, _, aliases) in COMMANDS.items():
                if word == name or word in aliases:
                    return name
            return None
    return None


class _Version(argparse.Action):
    """``--version``: the version and which build of the engine runs (see irohpy._build)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from irohpy import _build

        print(f"irohpy {__version__} ({_build.build()})")
        parser.exit()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the command it names gets its full (imported) sub-parser."""
    parser = argparse.ArgumentParser(prog="irohpy", description="iroh in pure Python: dial endpoints by key.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")
    parser.add_argument("--version", action=_Version, help="show the version and build (compiled or pure), then exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = _command_in(argv) if argv is not None else None
    for name, (module, help_text, aliases) in COMMANDS.items():
        if argv is None or name == wanted:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_text, aliases=list(aliases))
    return parser


class _Formatter(logging.Formatter):
    """Quiet runs print ``warning: ...`` lines, like the CLI's own messages; -v adds times and names."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if verbosity == 0:
        handler.setFormatter(_Formatter())
        # The commands report relay trouble themselves, once (see cli.common).
        logging.getLogger("irohpy.relay.client").setLevel(logging.ERROR)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if verbosity < 3:
        logging.getLogger("quic").setLevel(logging.WARNING)


async def _until_signal(command: Awaitable[object], caught: list[int]) -> object:
    """Run ``command``; SIGINT, SIGTERM or SIGHUP cancel it (its cleanup runs) and are noted in ``caught``."""
    import asyncio  # noqa: PLC0415 - `irohpy --help` and `irohpy key` need no event loop

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(signum: int) -> None:
        caught.append(signum)
        task.cancel()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await command
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


def run_command(result: object) -> int:
    """The exit status of a command's result (a coroutine runs until done or a signal)."""
    import asyncio  # noqa: PLC0415

    if not asyncio.iscoroutine(result):
        return int(result or 0)  # type: ignore[call-overload]
    caught: list[int] = []
    try:
        status = asyncio.run(_until_signal(result, caught))
    except (asyncio.CancelledError, KeyboardInterrupt):
        if not caught:
            caught.append(signal.SIGINT)
        status = None
    if caught:
        return 128 + caught[0]
    return int(status or 0)  # type: ignore[call-overload]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # also while the command's modules load, before its handlers exist
        return 128 + signal.SIGINT


def _main(argv: list[str]) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return run_command(args.func(args))
    except (IrohError, OSError, ValueError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
