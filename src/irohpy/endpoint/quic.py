"""iroh's QUIC behaviour on top of aioquic's sans-IO connection.

Two changes matter to users: receive credit follows what the application has
*read* (aioquic grants it on arrival, which lets a slow reader's memory grow
without bound), and the connection remembers who ended it, so errors can say
"closed by peer" or "idle timeout" precisely. A third keeps idle connections
small: the handshake's output buffers are freed with its keys.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

from irohpy.tls import IrohQuicConnection

MAX_STREAMS = 100
# Grant more credit only once this share of the window was consumed, so a
# reader does not cause one MAX_STREAM_DATA frame per packet.
CREDIT_STEP_DIVISOR = 4
MAX_STREAM_DATA_FRAME_CAPACITY = 1 + 8 + 8


class EndpointQuic(IrohQuicConnection):
    def __init__(self, *, stream_window: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._stream_window = stream_window
        self._local_max_streams_bidi.value = MAX_STREAMS
        self._local_max_streams_uni.value = MAX_STREAMS
        self.closed_by_peer = False
        self.idle_timed_out = False
        self.lost_packets = 0
        self.lost_bytes = 0
        recovery_lost = self._loss._on_packets_lost

        def count_lost(**kwargs: Any) -> None:
            packets = list(kwargs.pop("packets"))
            if kwargs.get("congestion_event", True):
                self.lost_packets += len(packets)
                self.lost_bytes += sum(p.sent_bytes for p in packets)
            recovery_lost(packets=packets, **kwargs)

        self._loss._on_packets_lost = count_lost  # type: ignore[method-assign]

    def auth_mark(self) -> int:
        """Changes whenever a packet was authenticated (decrypted) by this connection."""
        return sum(space.largest_received_packet for space in self._spaces.values())

    def _discard_epoch(self, epoch: tls.Epoch) -> None:
        super()._discard_epoch(epoch)
        if epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE) and epoch in self._crypto_buffers:
            # aioquic keeps a 16 KiB TLS output buffer per epoch for the
            # connection's lifetime; nothing writes to these two once their
            # keys are gone, and they are a third of an idle connection.
            self._crypto_buffers[epoch] = Buffer(capacity=0)

    def handle_timer(self, now: float) -> None:
        before = self._close_event
        super().handle_timer(now)
        if before is None and self._close_event is not None:
            self.idle_timed_out = True

    def _close_begin(self, is_initiator: bool, now: float) -> None:
        self.closed_by_peer = not is_initiator
        super()._close_begin(is_initiator, now)

    def consume(self, stream_id: int, nbytes: int) -> bool:
        """The application read ``nbytes``; True when new credit is due."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return False
        consumed = getattr(stream, "irohpy_consumed", 0) + nbytes
        stream.irohpy_consumed = consumed  # type: ignore[attr-defined]
        target = consumed + self._stream_window
        return target - stream.max_stream_data_local >= self._stream_window // CREDIT_STEP_DIVISOR

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        if not stream.max_stream_data_local:
            return
        target = getattr(stream, "irohpy_consumed", 0) + self._stream_window
        if target - stream.max_stream_data_local >= self._stream_window // CREDIT_STEP_DIVISOR:
            stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf: Buffer = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
