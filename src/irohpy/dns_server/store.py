"""The signed packets, one per key, in SQLite so they survive restarts.

Calls are single-row statements on a local file, short enough to run on the event loop.
The number of stored packets is counted once at open and then kept up to date by ``put``
and ``evict``: a ``COUNT(*)`` scans the table, which at half a million rows took 11 ms.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from irohpy.base.keys import PublicKey
from irohpy.errors import DnsServerError, IrohError
from irohpy.lookup.pkarr import SignedPacket

_SCHEMA = """
CREATE TABLE IF NOT EXISTS packets (
    key BLOB PRIMARY KEY,
    packet BLOB NOT NULL,
    stored_at REAL NOT NULL
)
"""


class PacketStore:
    def __init__(self, path: str | Path) -> None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._count = int(self._db.execute("SELECT COUNT(*) FROM packets").fetchone()[0])
        except (OSError, sqlite3.Error) as exc:
            raise DnsServerError(f"cannot open the packet database {path}: {exc}") from None

    def _row(self, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT packet FROM packets WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    @staticmethod
    def _parse(raw: bytes | None) -> SignedPacket | None:
        if raw is None:
            return None
        try:
            return SignedPacket.from_bytes(raw)
        except IrohError:
            return None

    def get(self, key: PublicKey) -> SignedPacket | None:
        return self._parse(self._row(key.to_bytes()))

    def put(self, packet: SignedPacket, now: float) -> bool:
        """Store ``packet`` unless the stored one is as new or newer; True if stored."""
        key = packet.public_key.to_bytes()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            raw = self._row(key)
            current = self._parse(raw)
            if current is not None and not packet.newer_than(current):
                return False
            self._db.execute("INSERT OR REPLACE INTO packets (key, packet, stored_at) VALUES (?, ?, ?)",
                             (key, packet.to_bytes(), now))
        if raw is None:
            self._count += 1
        return True

    def evict(self, stored_before: float) -> int:
        """Drop packets not refreshed since ``stored_before``; returns how many."""
        with self._db:
            evicted = int(self._db.execute("DELETE FROM packets WHERE stored_at < ?", (stored_before,)).rowcount)
        self._count -= evicted
        return evicted

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self._db.close()
