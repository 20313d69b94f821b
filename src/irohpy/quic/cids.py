"""Connection IDs of one path (RFC 9000 §5.1): the ones we issue and the ones the peer issued.

:class:`LocalCids` are ours: the peer addresses packets to them, a driver routes by them, and
each has a stateless reset token. :class:`PeerCids` are the peer's: we address packets to the
active one, retire what it asks us to, and recognise a stateless reset by their tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from irohpy.errors import QuicError
from irohpy.quic.packet import RESET_TOKEN_SIZE, stateless_reset_token

#: Connection IDs we keep issued at once, whatever higher limit the peer allows.
MAX_LOCAL_CIDS = 4


def reset_token(key: bytes, cid: bytes) -> bytes:
    """The stateless reset token of ``cid``: an HMAC under an endpoint's static key, so an
    endpoint that lost its state can still prove it issued the ID (RFC 9000 §10.3.2)."""
    return hmac.new(key, cid, hashlib.sha256).digest()[:RESET_TOKEN_SIZE]


class LocalCids:
    """Our connection IDs by sequence number, all of ``length`` bytes.

    With a ``reset_key`` the reset tokens come from :func:`reset_token`, else they are random.
    """

    __slots__ = ("length", "active", "next_sequence", "retire_prior_to", "reset_key", "_cids")

    def __init__(self, first: bytes, reset_key: bytes | None = None) -> None:
        self.length = len(first)
        self.reset_key = reset_key
        self.active: dict[int, tuple[bytes, bytes]] = {0: (first, self._token_for(first))}
        self.next_sequence = 1
        self.retire_prior_to = 0
        self._cids: list[bytes] | None = None

    def __contains__(self, cid: bytes) -> bool:
        for value, _ in self.active.values():
            if value == cid:
                return True
        return False

    def _token_for(self, cid: bytes) -> bytes:
        key = self.reset_key
        return reset_token(key, cid) if key is not None else os.urandom(RESET_TOKEN_SIZE)

    def cids(self) -> list[bytes]:
        """The active IDs, oldest first: one list until an ID is issued or retired (a driver
        asks after every pass to follow the routes), so callers must not change it."""
        cids = self._cids
        if cids is None:
            cids = self._cids = [cid for cid, _ in self.active.values()]
        return cids

    def token(self, sequence: int) -> bytes:
        return self.active[sequence][1]

    def issue(self, peer_limit: int) -> list[int]:
        """New IDs up to ``min(peer_limit, MAX_LOCAL_CIDS)``; returns their sequence numbers."""
        limit = peer_limit if peer_limit < MAX_LOCAL_CIDS else MAX_LOCAL_CIDS
        issued: list[int] = []
        current = sum(1 for seq in self.active if seq >= self.retire_prior_to)
        while current < limit:
            current += 1
            seq = self.next_sequence
            self.next_sequence = seq + 1
            cid = os.urandom(self.length)
            self.active[seq] = (cid, self._token_for(cid))
            issued.append(seq)
        if issued:
            self._cids = None
        return issued

    def rotate(self, peer_limit: int) -> list[int]:
        """Issue a fresh set and ask the peer to retire every older ID (Retire Prior To)."""
        self.retire_prior_to = self.next_sequence
        return self.issue(peer_limit)

    def retire(self, sequence: int, packet_dcid: bytes) -> bytes | None:
        """The peer retired ``sequence``; returns the retired ID (None if already gone)."""
        if sequence >= self.next_sequence:
            raise QuicError(f"RETIRE_CONNECTION_ID of {sequence}, never issued", frame_type=0x19)
        entry = self.active.get(sequence)
        if entry is None:
            return None
        if entry[0] == packet_dcid:
            raise QuicError("RETIRE_CONNECTION_ID of the ID it arrived on", frame_type=0x19)
        del self.active[sequence]
        self._cids = None
        return entry[0]


class PeerCids:
    """The peer's connection IDs: the one in use, spares, and what we must retire."""

    __slots__ = ("active", "current", "retire_prior_to", "limit", "to_retire", "zero_length")

    def __init__(self, first: bytes | None, limit: int) -> None:
        """``first``: the ID of the handshake, or None for a multipath path whose IDs all come
        in PATH_NEW_CONNECTION_ID frames."""
        self.active: dict[int, tuple[bytes, bytes]] = {0: (first, b"")} if first is not None else {}
        self.current = 0 if first is not None else -1
        self.retire_prior_to = 0
        #: Our active_connection_id_limit.
        self.limit = limit
        self.to_retire: list[int] = []
        self.zero_length = first is not None and not first

    def has_cid(self) -> bool:
        return self.current >= 0

    def cid(self) -> bytes:
        return self.active[self.current][0]

    def set_first(self, cid: bytes) -> None:
        """The client learns the server's chosen ID from its first Initial."""
        token = self.active[0][1]
        self.active[0] = (cid, token)
        self.zero_length = not cid

    def set_reset_token(self, sequence: int, token: bytes) -> None:
        entry = self.active.get(sequence)
        if entry is not None:
            self.active[sequence] = (entry[0], token)

    def on_new(self, sequence: int, retire_prior_to: int, cid: bytes, token: bytes) -> None:
        """A NEW_CONNECTION_ID frame (RFC 9000 §19.15)."""
        if self.zero_length:
            raise QuicError("NEW_CONNECTION_ID to a peer using zero-length IDs", frame_type=0x18)
        known = self.active.get(sequence)
        if known is not None:
            if known[0] != cid or (known[1] and known[1] != token):
                raise QuicError("NEW_CONNECTION_ID changes a sequence number's ID", frame_type=0x18)
            return
        for other_cid, _ in self.active.values():
            if other_cid == cid:
                raise QuicError("NEW_CONNECTION_ID repeats an ID under a new number", frame_type=0x18)
        if sequence < self.retire_prior_to:
            self.to_retire.append(sequence)
            return
        self.active[sequence] = (cid, token)
        if retire_prior_to > self.retire_prior_to:
            self.retire_prior_to = retire_prior_to
            for seq in [s for s in self.active if s < retire_prior_to]:
                del self.active[seq]
                self.to_retire.append(seq)
        if self.current not in self.active:
            self.current = min(self.active)
        if len(self.active) > self.limit:
            raise QuicError(
                f"{len(self.active)} active connection IDs, limit {self.limit}",
                error_code=QuicError.CONNECTION_ID_LIMIT_ERROR,
                frame_type=0x18,
            )

    def is_stateless_reset(self, datagram: bytes) -> bool:
        """Whether ``datagram`` ends with a reset token of one of the peer's IDs."""
        candidate = stateless_reset_token(datagram)
        if candidate is None:
            return False
        found = False
        for _, token in self.active.values():
            if token:
                found |= hmac.compare_digest(candidate, token)
        return found
