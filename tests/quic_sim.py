"""A seeded, in-memory network and a minimal sender/receiver built from irohpy.quic's cores.

No packet crypto and no wire encoding: a packet is a list of frame tuples with an estimated
size. Everything else is the real transport state: ACK tracking, RFC 9002 recovery, CUBIC with
pacing, PMTUD, streams and flow control. Time is simulated, so the outcome depends only on the
seed.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field

from irohpy.quic.ack import AckTracker
from irohpy.quic.congestion import Cubic, Pacer
from irohpy.quic.pmtud import Pmtud
from irohpy.quic.recovery import APPLICATION, TIMEOUT_LOSS, TIMEOUT_PTO, Recovery, SentPacket
from irohpy.quic.streams import StreamMap

INF = float("inf")

F_STREAM = 0  # (F_STREAM, sid, offset, data, fin)
F_ACK = 1  # (F_ACK, ranges, ack_delay)
F_MAX_DATA = 2  # (F_MAX_DATA, value)
F_MAX_STREAM_DATA = 3  # (F_MAX_STREAM_DATA, sid, value)
F_PING = 4  # (F_PING,)
F_PROBE = 5  # (F_PROBE,): PING plus padding, a PMTU probe

#: Short header (1 + 8-byte CID + 2-byte packet number) and the 16-byte AEAD tag.
PACKET_OVERHEAD = 27
STREAM_FRAME_OVERHEAD = 12


@dataclass
class LinkConfig:
    one_way_delay: float = 0.010
    rate: float = 12.5e6  # bytes per second (100 Mbit/s)
    queue_bytes: int = 500_000
    mtu: int = 1452
    loss: float = 0.0
    reorder: float = 0.0  # probability of an extra random delay up to reorder_delay
    reorder_delay: float = 0.005
    duplicate: float = 0.0
    #: From this simulated time on, the path MTU is ``mtu_later`` (a route change: black hole).
    mtu_change_at: float = INF
    mtu_later: int = 1452


@dataclass
class Stats:
    sent: int = 0
    dropped_random: int = 0
    dropped_queue: int = 0
    dropped_mtu: int = 0
    duplicated: int = 0


@dataclass(order=True)
class _Event:
    time: float
    seq: int
    peer: int = field(compare=False)
    packet: tuple[int, list[tuple[object, ...]], int] | None = field(compare=False)


class Sim:
    """Two peers joined by a lossy link in each direction, driven by a heap of events."""

    def __init__(self, link: LinkConfig, seed: int) -> None:
        self.link = link
        self.rng = random.Random(seed)
        self.now = 0.0
        self.events: list[_Event] = []
        self.seq = 0
        self.free_at = [0.0, 0.0]
        self.stats = Stats()
        self.peers: list[Peer] = []

    def schedule(self, t: float, peer: int, packet: tuple[int, list[tuple[object, ...]], int] | None) -> None:
        self.seq += 1
        heapq.heappush(self.events, _Event(t, self.seq, peer, packet))

    def transmit(self, src: int, pn: int, frames: list[tuple[object, ...]], size: int) -> None:
        link = self.link
        rng = self.rng
        self.stats.sent += 1
        if size > (link.mtu if self.now < link.mtu_change_at else link.mtu_later):
            self.stats.dropped_mtu += 1
            return
        if rng.random() < link.loss:
            self.stats.dropped_random += 1
            return
        start = self.free_at[src] if self.free_at[src] > self.now else self.now
        if (start - self.now) * link.rate > link.queue_bytes:
            self.stats.dropped_queue += 1
            return
        self.free_at[src] = start + size / link.rate
        arrive = self.free_at[src] + link.one_way_delay
        if rng.random() < link.reorder:
            arrive += rng.uniform(0.0, link.reorder_delay)
        dst = 1 - src
        self.schedule(arrive, dst, (pn, frames, size))
        if rng.random() < link.duplicate:
            self.stats.duplicated += 1
            self.schedule(arrive + rng.uniform(0.0, link.reorder_delay), dst, (pn, frames, size))

    def run(self, until: float) -> None:
        while self.events and not all(p.done() for p in self.peers):
            ev = heapq.heappop(self.events)
            if ev.time > until:
                raise TimeoutError(f"simulation passed {until} s")
            self.now = ev.time
            peer = self.peers[ev.peer]
            if ev.packet is None:
                if ev.time >= peer.timer_at:
                    peer.timer_at = INF
                peer.on_timer(self.now)
            else:
                pn, frames, size = ev.packet
                peer.on_packet(pn, frames, size, self.now)
            peer.reschedule()


class Peer:
    """One side: sends ``data`` on one bidi stream (client), or reads it and checks it (server)."""

    def __init__(self, sim: Sim, index: int, *, is_server: bool, data: bytes = b"") -> None:
        self.sim = sim
        self.index = index
        self.rec = Recovery(is_server=is_server, cc=Cubic(1200))
        self.rec.on_handshake_confirmed()
        self.rec.address_validated = True
        self.acks = AckTracker()
        self.pacer = Pacer(1200)
        self.pmtud = Pmtud(1452)
        window = 1 << 20
        self.streams = StreamMap(is_server=is_server, stream_window=window, conn_window=4 * window)
        self.streams.set_peer_params(
            max_data=4 * window,
            max_stream_data_bidi_local=window,
            max_stream_data_bidi_remote=window,
            max_stream_data_uni=window,
            max_streams_bidi=100,
            max_streams_uni=100,
        )
        self.next_pn = 0
        self.ctrl: list[tuple[object, ...]] = []
        self.timer_at = INF
        self.wake_at = INF
        self.received = 0
        self.digest = hashlib.sha256()
        self.finished_at = -1.0
        self.expect_len = len(data)
        self.sid = -1
        if data:
            self.sid = self.streams.open(False)
            mv = memoryview(data)
            for i in range(0, len(data), 65536):
                self.streams.send[self.sid].write(mv[i : i + 65536])
            self.streams.send[self.sid].write(b"", fin=True)

    def done(self) -> bool:
        return self.sid >= 0 or self.finished_at >= 0.0

    # -- receiving ----------------------------------------------------------

    def on_packet(self, pn: int, frames: list[tuple[object, ...]], size: int, now: float) -> None:
        eliciting = any(f[0] != F_ACK for f in frames)
        if not self.acks.on_packet(pn, eliciting, 0, now):
            return
        for f in frames:
            kind = f[0]
            if kind == F_STREAM:
                self.streams.on_stream_frame(f[1], f[2], f[3], f[4])  # type: ignore[arg-type]
            elif kind == F_ACK:
                self.rec.on_ack_received(APPLICATION, f[1], f[2], now)  # type: ignore[arg-type]
                self._on_acked(list(self.rec.acked))
                self._on_lost(list(self.rec.lost), now)
            elif kind == F_MAX_DATA:
                self.streams.on_max_data(f[1])  # type: ignore[arg-type]
            elif kind == F_MAX_STREAM_DATA:
                self.streams.on_max_stream_data(f[1], f[2])  # type: ignore[arg-type]
        self._read_app(now)
        self.flush(now)

    def _read_app(self, now: float) -> None:
        for rs in list(self.streams.recv.values()):
            while (chunk := rs.read_chunk()) is not None:
                self.digest.update(chunk)
                self.received += len(chunk)
            if rs.is_finished() and self.finished_at < 0.0:
                self.finished_at = now
            if rs.wants_window_update():
                self.ctrl.append((F_MAX_STREAM_DATA, rs.stream_id, rs.window.update(now, self.rec.rtt.smoothed)))
        v = self.streams.max_data_frame(now, self.rec.rtt.smoothed)
        if v >= 0:
            self.ctrl.append((F_MAX_DATA, v))

    def _on_acked(self, packets: list[SentPacket]) -> None:
        for p in packets:
            frames: list[tuple[object, ...]] = p.frames  # type: ignore[assignment]
            for f in frames:
                kind = f[0]
                if kind == F_STREAM:
                    ss = self.streams.send.get(f[1])  # type: ignore[arg-type]
                    if ss is not None:
                        ss.on_frame_acked(f[2], len(f[3]), f[4])  # type: ignore[arg-type]
                elif kind == F_ACK:
                    self.acks.on_ack_acked(f[1][0][1] - 1)  # type: ignore[index]
                elif kind == F_PROBE:
                    self.pmtud.on_probe_acked(p.size, self.sim.now)
                    self._mtu_changed()
            if not p.mtu_probe:
                self.pmtud.on_packet_acked(p.pn, p.size)

    def _on_lost(self, packets: list[SentPacket], now: float) -> None:
        for p in packets:
            frames: list[tuple[object, ...]] = p.frames  # type: ignore[assignment]
            for f in frames:
                kind = f[0]
                if kind == F_STREAM:
                    ss = self.streams.send.get(f[1])  # type: ignore[arg-type]
                    if ss is not None:
                        ss.on_frame_lost(f[2], len(f[3]), f[4])  # type: ignore[arg-type]
                elif kind == F_MAX_DATA:
                    if self.streams.conn_recv.on_update_lost(f[1]):  # type: ignore[arg-type]
                        self.ctrl.append(f)
                elif kind == F_MAX_STREAM_DATA:
                    rs = self.streams.recv.get(f[1])  # type: ignore[arg-type]
                    if rs is not None and rs.window.on_update_lost(f[2]):  # type: ignore[arg-type]
                        self.ctrl.append(f)
                elif kind == F_PROBE:
                    self.pmtud.on_probe_lost(p.size, now)
                    self._mtu_changed()
            if not p.mtu_probe and self.pmtud.on_packet_lost(p.pn, p.size, now):
                self._mtu_changed()

    def _mtu_changed(self) -> None:
        self.rec.cc.set_max_datagram_size(self.pmtud.mtu)
        self.pacer.max_datagram_size = self.pmtud.mtu

    # -- timers -------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        if now >= self.wake_at:
            self.wake_at = INF
        if now >= self.rec.loss_deadline():
            outcome = self.rec.on_timeout(now)
            if outcome == TIMEOUT_LOSS:
                self._on_lost(list(self.rec.lost), now)
            elif outcome == TIMEOUT_PTO:
                pass  # flush sends the probes
        self.flush(now)

    def reschedule(self) -> None:
        d = min(self.rec.loss_deadline(), self.acks.ack_deadline, self.wake_at)
        if d < self.timer_at:
            self.timer_at = d
            self.sim.schedule(d, self.index, None)

    # -- sending ------------------------------------------------------------

    def _has_data(self) -> bool:
        if self.ctrl or self.rec.probes > 0:
            return True
        ss = self.streams.send.get(self.sid)
        return ss is not None and ss.sendable(self.streams.conn_send)

    def flush(self, now: float) -> None:
        rec = self.rec
        while True:
            mtu = self.pmtud.datagram_size(rec.pto_count)
            probe = self.pmtud.poll_probe(now)
            # A pending PMTU probe goes before new data, else a full window starves it.
            probe_waits = False
            if probe and rec.probes == 0:
                if rec.send_budget() < probe:
                    probe_waits = True
                elif self.pacer.next_send_time(now, probe, rec.cc.cwnd, rec.rtt.smoothed) <= now:
                    self.pmtud.on_probe_sent()
                    self._send([(F_PROBE,)], probe, now, mtu_probe=True)
                    continue
            want_ack = self.acks.wants_ack(now)
            has_data = self._has_data()
            if has_data and rec.probes == 0:
                if probe_waits or rec.send_budget() < mtu:
                    has_data = False
                else:
                    t = self.pacer.next_send_time(now, mtu, rec.cc.cwnd, rec.rtt.smoothed)
                    if t > now:
                        self.wake_at = t
                        has_data = False
            if not want_ack and not has_data:
                break
            frames: list[tuple[object, ...]] = []
            size = PACKET_OVERHEAD
            if self.acks.received and (want_ack or has_data):
                ranges = self.acks.ranges()
                frames.append((F_ACK, ranges, self.acks.ack_delay(now)))
                size += 8 + 4 * len(ranges)
                self.acks.on_ack_sent()
            if has_data:
                while self.ctrl and size + 12 <= mtu:
                    frames.append(self.ctrl.pop())
                    size += 12
                ss = self.streams.send.get(self.sid)
                if ss is not None:
                    while size + STREAM_FRAME_OVERHEAD < mtu:
                        f = ss.next_frame(mtu - size - STREAM_FRAME_OVERHEAD, self.streams.conn_send)
                        if f is None:
                            break
                        frames.append((F_STREAM, self.sid, f[0], f[1], f[2]))
                        size += STREAM_FRAME_OVERHEAD + len(f[1])
                if rec.probes > 0 and len(frames) == (1 if frames and frames[0][0] == F_ACK else 0):
                    frames.append((F_PING,))
                    size += 1
            if not frames:
                break
            self._send(frames, size, now)
        ss = self.streams.send.get(self.sid)
        rec.app_limited = (ss is None or not ss.wants_send()) and rec.bytes_in_flight < rec.cc.cwnd

    def _send(self, frames: list[tuple[object, ...]], size: int, now: float, mtu_probe: bool = False) -> None:
        eliciting = any(f[0] != F_ACK for f in frames)
        pn = self.next_pn
        self.next_pn += 1
        self.rec.on_packet_sent(APPLICATION, SentPacket(pn, now, size, eliciting, eliciting, frames, mtu_probe))
        if eliciting:
            self.pacer.on_sent(size)
        self.sim.transmit(self.index, pn, frames, size)


@dataclass
class TransferResult:
    seconds: float
    intact: bool
    stats: Stats
    final_mtu: int
    black_holes: int
    congestion_events: int
    packets_lost: int


def transfer(size: int, link: LinkConfig, seed: int, until: float = 3600.0) -> TransferResult:
    """Send ``size`` random bytes from a client to a server over ``link``; time it."""
    sim = Sim(link, seed)
    data = random.Random(seed ^ 0x5EED).randbytes(size)
    client = Peer(sim, 0, is_server=False, data=data)
    server = Peer(sim, 1, is_server=True)
    server.expect_len = size
    sim.peers = [client, server]
    client.flush(0.0)
    client.reschedule()
    sim.run(until)
    intact = server.received == size and server.digest.digest() == hashlib.sha256(data).digest()
    return TransferResult(
        seconds=server.finished_at,
        intact=intact,
        stats=sim.stats,
        final_mtu=client.pmtud.mtu,
        black_holes=client.pmtud.black_holes,
        congestion_events=client.rec.cc.congestion_events,
        packets_lost=sim.stats.dropped_random + sim.stats.dropped_queue + sim.stats.dropped_mtu,
    )
