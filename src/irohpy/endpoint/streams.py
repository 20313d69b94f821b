"""QUIC streams as the application sees them.

Writes wait while too much data is unacknowledged and reads grant credit as
they consume, so a slow reader slows the writer and memory stays bounded on
both ends. The flow control itself is the engine's (:mod:`irohpy.endpoint.engine_streams`);
these add the application's API on top.
"""

from __future__ import annotations

from irohpy.endpoint.engine_streams import SEND_AHEAD, SEND_HIGH_WATER, EngineRecvStream, EngineSendStream

__all__ = ["SEND_AHEAD", "SEND_HIGH_WATER", "RecvStream", "SendStream"]


class SendStream(EngineSendStream):
    """The sending half of a stream."""

    __slots__ = ()

    async def finish(self) -> None:  # type: ignore[override]  # the public API awaits it
        """Send FIN: the peer's reads end after the data written so far."""
        EngineSendStream.finish(self)

    def __repr__(self) -> str:
        return f"SendStream(id={self.id})"


class RecvStream(EngineRecvStream):
    """The receiving half of a stream."""

    __slots__ = ()

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes of what has arrived; ``b""`` at the end of the stream."""
        if n <= 0 or not await self._wait_readable():
            return b""
        if len(self._chunks[0]) >= n or len(self._chunks) == 1:
            return self._take(n)
        parts = []
        remaining = n
        while remaining and self._chunks:
            part = self._take(remaining)
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)

    def received_reset(self) -> int | None:
        return self.reset_code

    def __repr__(self) -> str:
        return f"RecvStream(id={self.id})"
