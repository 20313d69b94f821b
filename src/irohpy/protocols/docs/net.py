"""The ``/iroh-sync/1`` exchange on one bidi stream: Alice dials and sends ``Init``, Bob answers.

Both sides alternate ``Sync`` messages until one has nothing left to say; then each finishes its
send side and drains the other. Every read waits at most ``timeout`` seconds; a malformed or
unexpected frame raises :class:`~irohpy.errors.SyncError` and the caller resets the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from irohpy.endpoint.streams import RecvStream, SendStream
from irohpy.errors import DocsError, SyncError
from irohpy.protocols.docs.ranger import Message, SyncOutcome
from irohpy.protocols.docs.replica import Replica
from irohpy.protocols.docs.wire import (
    DEFAULT_MAX_FRAME,
    Abort,
    AbortReason,
    FrameDecoder,
    Init,
    Sync,
    SyncFrame,
    encode_frame,
)

READ_TIMEOUT: Final = 30.0
VALIDATE_SLICE: Final = 128
"""Entries whose signatures are checked between yields to the event loop: an empty joiner gets
every entry of a document in one message, and checking 10,000 at once stalled every other
connection for about 2 s."""
ERR_SYNC: Final = 1
"""Reset code for a stream we give up on because of what the peer sent."""


class RemoteAbort(DocsError):
    """The peer refused to sync this document (``reason``: not found, already syncing, internal error)."""

    def __init__(self, reason: AbortReason) -> None:
        super().__init__(f"remote aborted the sync: {reason.name.lower()}")
        self.reason = reason


class SyncRefused(DocsError):
    """We answered a peer's Init with Abort (``reason``)."""

    def __init__(self, reason: AbortReason) -> None:
        super().__init__(f"sync refused: {reason.name.lower()}")
        self.reason = reason


@dataclass
class WireCount:
    """Bytes this exchange moved, framing included (not QUIC overhead)."""

    sent: int = 0
    received: int = 0


class FrameReader:
    def __init__(self, recv: RecvStream, timeout: float, max_frame: int, count: WireCount) -> None:
        self._recv = recv
        self._timeout = timeout
        self._decoder = FrameDecoder(max_frame)
        self._pending: list[SyncFrame] = []
        self._count = count

    async def next(self) -> SyncFrame | None:
        """The next frame, or None at a clean end of stream."""
        while not self._pending:
            async with asyncio.timeout(self._timeout):
                data = await self._recv.read(max(65536, min(self._decoder.needed(), 1 << 20)))
            if not data:
                if self._decoder.buffered:
                    raise SyncError("stream ended inside a sync frame")
                return None
            self._count.received += len(data)
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)


async def apply_message(replica: Replica, message: Message, peer: bytes, outcome: SyncOutcome) -> Message | None:
    """Check the message's entries a slice at a time, letting other tasks run in between, then
    apply it to the replica in one step; returns the reply (None: the exchange is done)."""
    valid: set[int] = set()
    for i, (entry, _status) in enumerate(message.values(), 1):
        if replica.validate(entry):
            valid.add(id(entry))
        if i % VALIDATE_SLICE == 0:
            await asyncio.sleep(0)
    return replica.sync_process_message(message, peer, outcome, lambda e: id(e) in valid)


async def _send(send: SendStream, frame: SyncFrame, count: WireCount) -> None:
    data = encode_frame(frame)
    count.sent += len(data)
    await send.write_all(data)


async def run_alice(send: SendStream, recv: RecvStream, replica: Replica, peer: bytes, *,
                    timeout: float = READ_TIMEOUT, max_frame: int = DEFAULT_MAX_FRAME,
                    count: WireCount | None = None) -> SyncOutcome:
    count = count if count is not None else WireCount()
    outcome = SyncOutcome()
    reader = FrameReader(recv, timeout, max_frame, count)
    await _send(send, Init(replica.namespace.to_bytes(), replica.sync_initial_message()), count)
    while (frame := await reader.next()) is not None:
        if isinstance(frame, Init):
            raise SyncError("unexpected init message")
        if isinstance(frame, Abort):
            raise RemoteAbort(frame.reason)
        reply = await apply_message(replica, frame.message, peer, outcome)
        if reply is None:
            break
        await _send(send, Sync(reply), count)
    return outcome


Acceptor = Callable[[bytes], "Replica | AbortReason"]


async def run_bob(send: SendStream, recv: RecvStream, accept: Acceptor, peer: bytes, *,
                  timeout: float = READ_TIMEOUT, max_frame: int = DEFAULT_MAX_FRAME,
                  count: WireCount | None = None,
                  on_namespace: Callable[[Replica], None] | None = None) -> tuple[Replica, SyncOutcome]:
    """Answer one sync; ``accept(namespace)`` returns the replica or the reason to abort."""
    count = count if count is not None else WireCount()
    outcome = SyncOutcome()
    reader = FrameReader(recv, timeout, max_frame, count)
    replica: Replica | None = None
    while (frame := await reader.next()) is not None:
        if isinstance(frame, Init):
            if replica is not None:
                raise SyncError("double init message")
            verdict = accept(frame.namespace)
            if isinstance(verdict, AbortReason):
                await _send(send, Abort(verdict), count)
                raise SyncRefused(verdict)
            replica = verdict
            if on_namespace is not None:
                on_namespace(replica)
            message = frame.message
        elif isinstance(frame, Sync):
            if replica is None:
                raise SyncError("unexpected sync message before init")
            message = frame.message
        else:
            raise SyncError("unexpected sync abort message")
        reply = await apply_message(replica, message, peer, outcome)
        if reply is None:
            break
        await _send(send, Sync(reply), count)
    if replica is None:
        raise SyncError("stream closed before init message")
    return replica, outcome
