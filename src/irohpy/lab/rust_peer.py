"""The official ``iroh`` package (Rust iroh 1.x) as a lab peer, with ``irohpy.lab.peer``'s events.

``python -m irohpy.lab.rust_peer listen --relay URL [--port N] [--external-ip IP]`` binds a
Rust endpoint, waits for its home relay and prints ``{"event": "ready", "id": ...}``; it then
serves the same ping and data streams as ``irohpy.lab.peer`` until SIGTERM.
``python -m irohpy.lab.rust_peer dial TICKET --relay URL ...`` dials a ticket (the lab's
tickets hold only the EndpointId and the relay URL, so the first path is the relay), runs
``irohpy.lab.peer``'s exercise and prints the same ``connected``, ``transfer_start``,
``transfer_done`` and ``result`` events, so scenarios drive both kinds alike.

Confined to the lab: it refuses to start outside an irohpy lab namespace (those have only
the lab's routes), binds with ``preset_minimal`` (no DNS, pkarr or any other address lookup)
and knows one relay, the lab's, with QUIC address discovery off (``quic_port=None``): the
Rust client trusts only the webpki roots compiled into it, which no lab certificate chains
to (iroh-wire.md §4.8). ``--external-ip`` tells it instead what QAD would have: the
router's WAN address with its bound port (``add_external_addr``; cone NATs keep the port).
After a network change the lab writes ``external HOST:PORT`` lines to a dialer's stdin (its
router's new mapping), which replace the address it was told, as QAD's next report would.
Path changes come from the Rust side's own view, ``Connection.watch_paths``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from irohpy.errors import LabError
from irohpy.lab import netns, topology
from irohpy.lab.peer import ALPN, START_TIMEOUT, emit, exercise, serve_conn

T = TypeVar("T")

try:
    import iroh
except ImportError:  # pragma: no cover - the package is a test extra; main() says so
    iroh = None  # type: ignore[assignment]


def unavailable_reason() -> str | None:
    """Why Rust peers cannot run here, or None."""
    if iroh is None:
        return "Rust lab peers need the official iroh package (pip install 'iroh==1.2.0')"
    return None


def in_lab_namespace() -> bool:
    """Whether this process's network namespace is one of an irohpy lab's."""
    own = os.stat("/proc/thread-self/ns/net")
    for name in topology.lab_namespaces():
        with contextlib.suppress(OSError):
            st = os.stat(os.path.join(netns.NETNS_DIR, name))
            if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                return True
    return False


async def _rust(call: Awaitable[T]) -> T:
    """Await a call into the bindings; their errors become :class:`LabError` like irohpy's own."""
    try:
        return await call
    except iroh.IrohError as exc:
        raise LabError(f"iroh: {exc.message()}") from None


class _Send:
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def write_all(self, data: bytes) -> None:
        await _rust(self._stream.write_all(data))

    async def finish(self) -> None:
        await _rust(self._stream.finish())


class _Recv:
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def read(self, limit: int) -> bytes:
        return bytes(await _rust(self._stream.read(limit)))

    async def read_exact(self, n: int) -> bytes:
        return bytes(await _rust(self._stream.read_exact(n)))

    async def read_to_end(self, limit: int) -> bytes:
        return bytes(await _rust(self._stream.read_to_end(limit)))


class RustConnection:
    """The stream calls ``irohpy.lab.peer`` makes on a connection, on a Rust one."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def open_bi(self) -> tuple[_Send, _Recv]:
        bi = await _rust(self.conn.open_bi())
        return _Send(bi.send()), _Recv(bi.recv())

    async def accept_bi(self) -> tuple[_Send, _Recv]:
        bi = await _rust(self.conn.accept_bi())
        return _Send(bi.send()), _Recv(bi.recv())

    @property
    def is_closed(self) -> bool:
        return self.conn.close_reason() is not None


class PathLog:
    """Path changes as ``[wall time, "direct"|"relay", remote address]``, from the Rust side's
    ``watch_paths``: one entry each time the selected path changes kind."""

    def __init__(self, conn: Any) -> None:
        self.changes: list[list[Any]] = []
        self._last: str | None = None
        self.record(conn.paths())

    def record(self, paths: list[Any]) -> None:
        selected = next((p for p in paths if p.is_selected), None)
        if selected is None:
            return
        kind = "direct" if selected.is_ip else "relay"
        if kind != self._last:
            self.changes.append([time.time(), kind, selected.remote_addr])
            self._last = kind

    def kind(self) -> str:
        return self._last or "relay"


def _watcher(log: PathLog) -> Any:
    class Watcher(iroh.PathChangeCallback):
        async def on_change(self, paths: list[Any]) -> None:
            log.record(paths)
    return Watcher()


async def _bind(args: argparse.Namespace, alpns: list[bytes] | None) -> tuple[Any, str | None]:
    """The endpoint, and the external address it was told (None: none)."""
    relays = iroh.RelayMap.empty()
    relays.insert(iroh.RelayConfig(url=args.relay, quic_port=None))
    endpoint = await iroh.Endpoint.bind(iroh.EndpointOptions(
        preset=iroh.preset_minimal(), relay_mode=iroh.RelayMode.custom(relays),
        bind_addr=f"0.0.0.0:{args.port}", alpns=alpns))
    told = None
    try:
        if args.external_ip:
            port = next(s for s in endpoint.bound_sockets() if not s.startswith("[")).rpartition(":")[2]
            told = f"{args.external_ip}:{port}"
            await endpoint.add_external_addr(told)
        async with asyncio.timeout(START_TIMEOUT):
            await endpoint.online()
    except BaseException:
        await endpoint.close()
        raise
    return endpoint, told


async def _follow_external(endpoint: Any, told: str | None) -> None:
    """Lines ``external HOST:PORT`` on stdin replace the address we were told: the lab's word
    after a network change, as QAD's next report would have been."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        kind, _, addr = line.decode(errors="replace").strip().partition(" ")
        if kind != "external" or not addr or addr == told:
            continue
        if told is not None:
            await endpoint.remove_external_addr(told)
        await endpoint.add_external_addr(addr)
        told = addr


def _socket(text: str) -> list[Any]:
    """``"0.0.0.0:5"`` or ``"[::]:5"`` as ``irohpy.lab.peer`` reports sockets: ``[host, port]``."""
    host, _, port = text.rpartition(":")
    return [host.strip("[]"), int(port)]


def _metrics(endpoint: Any) -> dict[str, int]:
    return {name: stat.value for name, stat in endpoint.stats().items()}


async def listen(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    endpoint, _ = await _bind(args, [ALPN])
    conns: list[Any] = []
    try:
        emit(event="ready", id=str(endpoint.id()), sockets=[_socket(s) for s in endpoint.bound_sockets()])

        async def accept_loop() -> None:
            async with asyncio.TaskGroup() as group:
                while (incoming := await endpoint.accept_next()) is not None:
                    with contextlib.suppress(iroh.IrohError):
                        conn = await (await incoming.accept()).connect()
                        conns.append(conn)
                        group.create_task(serve_conn(RustConnection(conn)))  # type: ignore[arg-type]

        acceptor = asyncio.create_task(accept_loop())
        await stop.wait()
        for conn in conns:
            conn.close(0, b"lab over")
        acceptor.cancel()
        with contextlib.suppress(asyncio.CancelledError, iroh.IrohError):
            await acceptor
    finally:
        await endpoint.close()
    return 0


async def dial(args: argparse.Namespace) -> int:
    endpoint, told = await _bind(args, None)
    follower = asyncio.create_task(_follow_external(endpoint, told))
    try:
        target = iroh.EndpointTicket.from_string(args.target).endpoint_addr()
        started = time.time()
        try:
            conn = await asyncio.wait_for(endpoint.connect(target, ALPN), args.connect_timeout)
        except (iroh.IrohError, TimeoutError) as exc:
            emit(event="result", connected=False, error=f"connect: {exc!r}")
            return 0
        connected = time.time()
        emit(event="connected", time=connected, connect_s=connected - started)
        log = PathLog(conn)
        handle = conn.watch_paths(_watcher(log))
        try:
            result = await exercise(RustConnection(conn), log, args)  # type: ignore[arg-type]
        finally:
            await handle.stop()
        log.record(conn.paths())
        final_path = "closed" if conn.close_reason() is not None else log.kind()
        conn.close(0, b"done")
        emit(event="result", connected=True, started=started, connected_at=connected, path_changes=log.changes,
             final_path=final_path, metrics=_metrics(endpoint), **result)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await endpoint.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m irohpy.lab.rust_peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("listen", "dial"))
    parser.add_argument("target", nargs="?", help="the listener's ticket (dial)")
    parser.add_argument("--relay", required=True, help="the lab relay's URL, the only relay used")
    parser.add_argument("--external-ip", help="the router's WAN address, announced with our bound port")
    parser.add_argument("--port", type=int, default=0, help="UDP port to bind (default any)")
    parser.add_argument("--bytes", type=int, default=4 << 20)
    parser.add_argument("--rate", type=float, default=0.0, help="pace the transfer to this many bytes/s")
    parser.add_argument("--pings", type=int, default=5)
    parser.add_argument("--ping-interval", type=float, default=0.1)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait for a direct path at the end")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--connect-timeout", type=float, default=15.0)
    return parser


async def _main(args: argparse.Namespace) -> int:
    iroh.iroh_ffi.uniffi_set_event_loop(asyncio.get_running_loop())  # type: ignore[arg-type]
    iroh.set_log_level(iroh.LogLevel.WARN)
    return await (listen(args) if args.mode == "listen" else dial(args))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.mode == "dial" and not args.target:
        emit(event="error", message="dial needs the listener's ticket")
        return 1
    if reason := unavailable_reason():
        emit(event="error", message=reason)
        return 1
    if not in_lab_namespace():
        emit(event="error", message="refusing to run a Rust peer outside an irohpy lab namespace")
        return 1
    try:
        return asyncio.run(_main(args))
    except Exception as exc:  # noqa: BLE001 - reported to the lab as an event
        emit(event="error", message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
