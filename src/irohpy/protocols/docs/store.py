"""Persistent state of iroh-docs in SQLite: capabilities, authors, entries, sync peers, policies.

One database file per ``Docs``. It runs in WAL mode with ``synchronous=FULL`` and every change
(a local write, everything one sync message brought) is one transaction, so a crash leaves
either all of it or none. Entries are the replica's truth; the in-memory index a replica syncs
from is rebuilt from them on open, which is how a restarted peer picks the sync up where it was.
Secrets are stored as raw bytes; the file is created with mode 0600.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

from irohpy.errors import DocsError
from irohpy.protocols.docs.entry import SignedEntry
from irohpy.protocols.docs.keys import Author, NamespaceSecret
from irohpy.protocols.docs.ranger import Inserted

MAX_PEERS_PER_NAMESPACE: Final = 5
"""Recent sync peers kept per document, as upstream's peers table."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS namespaces (id BLOB PRIMARY KEY, secret BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS authors (id BLOB PRIMARY KEY, secret BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    namespace BLOB NOT NULL, author BLOB NOT NULL, key BLOB NOT NULL,
    timestamp INTEGER NOT NULL, len INTEGER NOT NULL, hash BLOB NOT NULL,
    namespace_sig BLOB NOT NULL, author_sig BLOB NOT NULL,
    PRIMARY KEY (namespace, author, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peers (
    namespace BLOB NOT NULL, peer BLOB NOT NULL, seen INTEGER NOT NULL, addr BLOB,
    PRIMARY KEY (namespace, peer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live (namespace BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS download_policy (namespace BLOB PRIMARY KEY, policy BLOB NOT NULL) WITHOUT ROWID;
"""
_I64: Final = 1 << 63


def _to_sql(value: int) -> int:
    """u64 -> i64 (SQLite integers are signed), bit for bit."""
    return value - (1 << 64) if value >= _I64 else value


def _from_sql(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


class DocStore:
    """The SQLite database behind a ``Docs``; ``path=None`` keeps everything in memory."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
        target = ":memory:" if self.path is None else str(self.path)
        try:
            self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise DocsError(f"cannot open docs store {target}: {exc}") from None
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise DocsError("docs store is closed")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise DocsError(f"docs store: {exc}") from None

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        if self._closed:
            raise DocsError("docs store is closed")
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise DocsError(f"docs store: {exc}") from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()

    # -- namespaces ----------------------------------------------------------------

    def put_namespace(self, namespace: bytes, secret: NamespaceSecret | None) -> None:
        """Remember a document; a secret upgrades a read capability to write, never the reverse."""
        with self._tx() as db:
            db.execute("INSERT INTO namespaces(id, secret) VALUES (?, ?) ON CONFLICT(id) DO UPDATE "
                       "SET secret = COALESCE(namespaces.secret, excluded.secret)",
                       (namespace, None if secret is None else secret.to_bytes()))

    def namespace_secret(self, namespace: bytes) -> tuple[bool, NamespaceSecret | None]:
        """(known, secret-or-None)."""
        rows = self._rows("SELECT secret FROM namespaces WHERE id = ?", (namespace,))
        if not rows:
            return False, None
        raw = rows[0][0]
        return True, None if raw is None else NamespaceSecret(bytes(raw))  # type: ignore[arg-type]

    def namespaces(self) -> list[tuple[bytes, bool]]:
        """Every document: (id, writable)."""
        return [(bytes(r[0]), r[1] is not None) for r in self._rows("SELECT id, secret FROM namespaces ORDER BY id")]  # type: ignore[arg-type]

    def drop_namespace(self, namespace: bytes) -> None:
        with self._tx() as db:
            for table, col in (("entries", "namespace"), ("peers", "namespace"), ("live", "namespace"),
                               ("download_policy", "namespace"), ("namespaces", "id")):
                db.execute(f"DELETE FROM {table} WHERE {col} = ?", (namespace,))

    # -- authors -------------------------------------------------------------------

    def put_author(self, author: Author) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO authors(id, secret) VALUES (?, ?)",
                       (author.id().to_bytes(), author.to_bytes()))

    def author(self, author_id: bytes) -> Author | None:
        rows = self._rows("SELECT secret FROM authors WHERE id = ?", (author_id,))
        return Author(bytes(rows[0][0])) if rows else None  # type: ignore[arg-type]

    def authors(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._rows("SELECT id FROM authors ORDER BY id")]  # type: ignore[arg-type]

    def get_setting(self, name: str) -> bytes | None:
        rows = self._rows("SELECT value FROM settings WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None  # type: ignore[arg-type]

    def set_setting(self, name: str, value: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO settings(name, value) VALUES (?, ?)", (name, value))

    # -- entries -------------------------------------------------------------------

    def load_entries(self, namespace: bytes) -> list[SignedEntry]:
        rows = self._rows("SELECT author, key, timestamp, len, hash, namespace_sig, author_sig FROM entries "
                          "WHERE namespace = ?", (namespace,))
        return [SignedEntry(namespace, bytes(a), bytes(k), _from_sql(ln), bytes(h), _from_sql(ts), bytes(asig),  # type: ignore[arg-type]
                            bytes(nsig))  # type: ignore[arg-type]
                for a, k, ts, ln, h, nsig, asig in rows]

    def apply(self, inserted: Iterable[Inserted]) -> None:
        """Persist inserts and the entries they replaced, all in one transaction."""
        with self._tx() as db:
            for ins in inserted:
                for old in ins.removed:
                    db.execute("DELETE FROM entries WHERE namespace = ? AND author = ? AND key = ?",
                               (old.namespace_bytes, old.author_bytes, old.key))
                e = ins.entry
                db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (e.namespace_bytes, e.author_bytes, e.key, _to_sql(e.timestamp), _to_sql(e.content_len),
                            e.content_hash, e.namespace_signature, e.author_signature))

    # -- sync state ----------------------------------------------------------------

    def add_peer(self, namespace: bytes, peer: bytes, seen: int, addr: bytes | None = None) -> None:
        """Remember a useful sync peer, with its last known address (postcard EndpointAddr)."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO peers(namespace, peer, seen, addr) VALUES (?, ?, ?, ?)",
                       (namespace, peer, seen, addr))
            db.execute("DELETE FROM peers WHERE namespace = ? AND peer NOT IN (SELECT peer FROM peers "
                       "WHERE namespace = ? ORDER BY seen DESC LIMIT ?)", (namespace, namespace, MAX_PEERS_PER_NAMESPACE))

    def peers(self, namespace: bytes) -> list[tuple[bytes, bytes | None]]:
        """Recent sync peers, newest first: (id, encoded address or None)."""
        rows = self._rows("SELECT peer, addr FROM peers WHERE namespace = ? ORDER BY seen DESC", (namespace,))
        return [(bytes(p), None if a is None else bytes(a)) for p, a in rows]  # type: ignore[arg-type]

    def set_live(self, namespace: bytes, live: bool) -> None:
        with self._tx() as db:
            if live:
                db.execute("INSERT OR IGNORE INTO live(namespace) VALUES (?)", (namespace,))
            else:
                db.execute("DELETE FROM live WHERE namespace = ?", (namespace,))

    def live_namespaces(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._rows("SELECT namespace FROM live ORDER BY namespace")]  # type: ignore[arg-type]

    def set_download_policy(self, namespace: bytes, policy: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO download_policy(namespace, policy) VALUES (?, ?)", (namespace, policy))

    def download_policy(self, namespace: bytes) -> bytes | None:
        rows = self._rows("SELECT policy FROM download_policy WHERE namespace = ?", (namespace,))
        return bytes(rows[0][0]) if rows else None  # type: ignore[arg-type]
