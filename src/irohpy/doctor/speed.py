"""``irohpy doctor accept`` / ``connect``: latency and throughput between two endpoints,
first over the relay, then direct, recorded for ``doctor plot``.

The wire protocol (ALPN ``irohpy/doctor/0``) is one bidirectional stream per request:
``P`` + 8 bytes is echoed back (a ping); ``T`` + a u64 size is followed by that many bytes,
and answered with the u64 count received (a throughput run). The connecting side measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from irohpy.base.addr import EndpointAddr, TransportAddr
from irohpy.base.keys import SecretKey
from irohpy.endpoint import presets
from irohpy.endpoint.connection import Connection
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import DoctorError, IrohError
from irohpy.lookup.base import AddressLookup
from irohpy.relay.map import RelayMode

ALPN = b"irohpy/doctor/0"
PING = b"P"
TRANSFER = b"T"
MAX_TRANSFER = 1 << 34
CHUNK = 1 << 18
REQUEST_TIMEOUT = 30.0
SAMPLE_EVERY = 0.05
PING_EVERY = 0.1
POLL = 0.01
RECORD_VERSION = 1


# -- the accepting side ---------------------------------------------------------------


class DoctorProtocol:
    """Router handler answering pings and absorbing throughput runs."""

    def __init__(self, on_conn: Callable[[Connection, str], None] | None = None) -> None:
        self._on_conn = on_conn

    async def accept(self, conn: Connection) -> None:
        if self._on_conn is not None:
            self._on_conn(conn, "connected")
        async with asyncio.TaskGroup() as group:
            with contextlib.suppress(IrohError):
                while True:
                    send, recv = await conn.accept_bi()
                    group.create_task(self._serve(send, recv))
        if self._on_conn is not None:
            self._on_conn(conn, "closed")

    async def _serve(self, send: Any, recv: Any) -> None:
        with contextlib.suppress(IrohError, TimeoutError):
            async with asyncio.timeout(REQUEST_TIMEOUT):
                kind = await recv.read_exact(1)
            if kind == PING:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    await send.write_all(await recv.read_exact(8))
                    await send.finish()
                return
            if kind != TRANSFER:
                send.reset(1)
                recv.stop(1)
                return
            async with asyncio.timeout(REQUEST_TIMEOUT):
                (size,) = struct.unpack("!Q", await recv.read_exact(8))
            if size > MAX_TRANSFER:
                send.reset(2)
                recv.stop(2)
                return
            total = 0
            while True:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    chunk = await recv.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
            await send.write_all(struct.pack("!Q", total))
            await send.finish()

    async def shutdown(self) -> None:
        """Nothing to flush; the router cancels running requests."""


# -- the connecting side ----------------------------------------------------------------


@dataclass
class Phase:
    """One part of a run: ``relay`` (a relay-only endpoint) or ``direct`` (hole-punched)."""

    name: str
    path: str = "relay"
    """What the data used in the end: ``relay`` or ``direct``."""
    bytes: int = 0
    seconds: float | None = None
    rtt_ms: list[float] = field(default_factory=list)
    path_changes: int = 0
    note: str = ""

    @property
    def mb_per_s(self) -> float | None:
        return self.bytes / self.seconds / 1e6 if self.seconds else None

    def percentile(self, q: float) -> float | None:
        if not self.rtt_ms:
            return None
        ordered = sorted(self.rtt_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


@dataclass
class Record:
    """A whole ``connect`` run: what the table shows and the time series ``plot`` draws.

    ``rtt`` holds ``[t, ms, phase]``, ``progress`` ``[t, bytes so far, phase]`` and
    ``path_changes`` ``[t, "relay"|"direct", address]``; ``t`` is seconds since the start.
    """

    peer: str
    started: float
    phases: list[Phase] = field(default_factory=list)
    rtt: list[list[Any]] = field(default_factory=list)
    progress: list[list[Any]] = field(default_factory=list)
    path_changes: list[list[Any]] = field(default_factory=list)
    version: int = RECORD_VERSION

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for phase, data in zip(self.phases, out["phases"]):
            data["mb_per_s"] = phase.mb_per_s
            data.update({f"rtt_p{q}_ms": phase.percentile(q) for q in (50, 90, 99)})
        return out

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Record:
        try:
            data = json.loads(path.read_text())
            if data.get("version") != RECORD_VERSION:
                raise DoctorError(f"{path}: not a doctor record (version {data.get('version')!r})")
            phases = [Phase(p["name"], p["path"], int(p["bytes"]), p["seconds"], [float(x) for x in p["rtt_ms"]],
                            int(p["path_changes"]), str(p.get("note", ""))) for p in data["phases"]]
            return cls(str(data["peer"]), float(data["started"]), phases,
                       [[float(t), float(v), str(ph)] for t, v, ph in data["rtt"]],
                       [[float(t), int(v), str(ph)] for t, v, ph in data["progress"]],
                       [[float(t), str(k), str(a)] for t, k, a in data["path_changes"]])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DoctorError(f"cannot read doctor record {path}: {exc}") from None


Listener = Callable[[str, Phase, int, int, float | None], None]
"""Progress callback: (event, phase, bytes done, bytes total, last rtt ms)."""


class ConnectRun:
    """Drives one ``doctor connect``: the relay phase, then the direct phase."""

    def __init__(self, target: EndpointAddr, relay_mode: RelayMode, *, size: int, pings: int,
                 direct_timeout: float, bind_addrs: list[str], listener: Listener | None = None,
                 secret_key: SecretKey | None = None,
                 address_lookup: Callable[[SecretKey], list[AddressLookup]] | None = None,
                 on_bound: Callable[[str, Endpoint], None] | None = None) -> None:
        """``secret_key``: the identity of both phases' endpoints (a fresh one each if None);
        ``address_lookup(secret)``: the lookups an endpoint of that identity uses; ``on_bound``
        sees each phase's endpoint as it is bound (to serve its metrics, say)."""
        self.target = target
        self.relay_mode = relay_mode
        self.size = size
        self.pings = pings
        self.direct_timeout = direct_timeout
        self.bind_addrs = bind_addrs
        self.listener = listener
        self.secret_key = secret_key
        self.address_lookup = address_lookup
        self.on_bound = on_bound
        self.record = Record(str(target.id), time.time())
        self.endpoints: dict[str, Endpoint] = {}
        self._t0 = time.perf_counter()

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _tell(self, event: str, phase: Phase, done: int = 0, last_rtt: float | None = None) -> None:
        if self.listener is not None:
            self.listener(event, phase, done, self.size, last_rtt)

    async def _bind(self, name: str, *, relay_only: bool) -> Endpoint:
        secret = self.secret_key if self.secret_key is not None else SecretKey.generate()
        lookups = self.address_lookup(secret) if self.address_lookup is not None else []
        endpoint = await Endpoint.bind(secret_key=secret, preset=presets.MINIMAL, relay_mode=self.relay_mode,
                                       relay_only=relay_only, bind_addrs=self.bind_addrs, address_lookup=lookups)
        self.endpoints[name] = endpoint
        if self.on_bound is not None:
            self.on_bound(name, endpoint)
        return endpoint

    async def run(self) -> Record:
        """Each phase on an endpoint of its own, closed before the next is bound: with one
        ``secret_key`` the two must not be on the relay at the same time."""
        relay_urls = self.target.relay_urls()
        if relay_urls:
            addr = EndpointAddr(self.target.id, frozenset({TransportAddr.Relay(relay_urls[0])}))
            endpoint = await self._bind("relay", relay_only=True)
            try:
                await self._phase("relay", endpoint, addr, wait_direct=False)
            finally:
                await self.endpoints.pop("relay").close()
        await self._phase("direct", await self._bind("direct", relay_only=False), self.target, wait_direct=True)
        return self.record

    async def close(self) -> None:
        await asyncio.gather(*(ep.close() for ep in self.endpoints.values()))

    async def _phase(self, name: str, endpoint: Endpoint, addr: EndpointAddr, *, wait_direct: bool) -> None:
        phase = Phase(name)
        self.record.phases.append(phase)
        self._tell("start", phase)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.direct_timeout):
                await endpoint.online()
        try:
            conn = await endpoint.connect(addr, ALPN, timeout=self.direct_timeout)
        except IrohError as exc:
            phase.note = f"connect failed: {exc}"
            self._tell("failed", phase)
            return
        watcher = asyncio.ensure_future(self._watch(conn, phase))
        try:
            if wait_direct and not await self._until_direct(conn, phase):
                phase.note = f"no direct path within {self.direct_timeout:g} s"
            for _ in range(self.pings):
                await self._ping(conn, phase)
                await asyncio.sleep(PING_EVERY / 4)
            await self._transfer(conn, phase)
            phase.path = "direct" if conn.is_direct else "relay"
            self._tell("done", phase, phase.bytes)
        except (IrohError, TimeoutError) as exc:
            phase.note = f"failed: {exc or type(exc).__name__}"
            self._tell("failed", phase)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            conn.close(0, b"doctor done")

    async def _watch(self, conn: Connection, phase: Phase) -> None:
        last: str | None = None
        while not conn.is_closed:
            kind = "direct" if conn.is_direct else "relay"
            if kind != last:
                selected = next((p.addr for p in conn.paths() if p.selected), "")
                self.record.path_changes.append([self._now(), kind, selected])
                if last is not None:
                    phase.path_changes += 1
                last = kind
            await asyncio.sleep(POLL)

    async def _until_direct(self, conn: Connection, phase: Phase) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.direct_timeout):
                while not conn.is_direct:
                    await self._ping(conn, phase, keep=False)
                    await asyncio.sleep(PING_EVERY / 2)
                return True
        return False

    async def _ping(self, conn: Connection, phase: Phase, keep: bool = True) -> None:
        start = time.perf_counter()
        async with asyncio.timeout(REQUEST_TIMEOUT):
            send, recv = await conn.open_bi()
            token = os.urandom(8)
            await send.write_all(PING + token)
            await send.finish()
            if await recv.read_to_end(16) != token:
                raise DoctorError("the peer echoed something else")
        ms = (time.perf_counter() - start) * 1000
        self.record.rtt.append([self._now(), ms, phase.name])
        if keep:
            phase.rtt_ms.append(ms)
        self._tell("rtt", phase, phase.bytes, ms)

    async def _transfer(self, conn: Connection, phase: Phase) -> None:
        payload = os.urandom(CHUNK)
        pinger = asyncio.ensure_future(self._ping_during(conn, phase))
        start = time.perf_counter()
        last_sample = 0.0
        try:
            async with asyncio.timeout(max(REQUEST_TIMEOUT, self.size / 1e5)):
                send, recv = await conn.open_bi()
                await send.write_all(TRANSFER + struct.pack("!Q", self.size))
                self.record.progress.append([self._now(), 0, phase.name])
                sent = 0
                while sent < self.size:
                    n = min(CHUNK, self.size - sent)
                    await send.write_all(payload[:n])
                    sent += n
                    phase.bytes = sent
                    if time.perf_counter() - last_sample >= SAMPLE_EVERY:
                        last_sample = time.perf_counter()
                        self.record.progress.append([self._now(), sent, phase.name])
                        self._tell("progress", phase, sent)
                await send.finish()
                (received,) = struct.unpack("!Q", await recv.read_exact(8))
        finally:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
        if received != self.size:
            raise DoctorError(f"the peer received {received} of {self.size} bytes")
        phase.seconds = time.perf_counter() - start
        self.record.progress.append([self._now(), self.size, phase.name])

    async def _ping_during(self, conn: Connection, phase: Phase) -> None:
        with contextlib.suppress(IrohError, TimeoutError):
            while True:
                await asyncio.sleep(PING_EVERY)
                await self._ping(conn, phase)


def summary_rows(record: Record) -> list[tuple[str, ...]]:
    """Rows of the final table: phase, path, MB/s, RTT percentiles, path changes, note."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"
    rows: list[tuple[str, ...]] = []
    for p in record.phases:
        rows.append((p.name, p.path, "-" if p.mb_per_s is None else f"{p.mb_per_s:.2f}", ms(p.percentile(50)),
                     ms(p.percentile(90)), ms(p.percentile(99)), str(p.path_changes), p.note))
    return rows


COLUMNS = ("phase", "path", "MB/s", "rtt p50 ms", "p90", "p99", "path changes", "note")
