"""iroh-docs (ALPN ``/iroh-sync/1``): multi-writer key-value documents that sync by set reconciliation.

``Docs(endpoint, blobs, gossip)`` is the API; register it on a Router under ``docs.alpn`` next to
blobs and gossip. The keys (:mod:`.keys`), entries (:mod:`.entry`), the reconciliation core
(:mod:`.ranger`), the wire codecs (:mod:`.wire`) and the SQLite store (:mod:`.store`) are usable
on their own.
"""

from __future__ import annotations

from irohpy.protocols.docs.engine import (
    ContentReady,
    Doc,
    Docs,
    DocSubscription,
    Entry,
    InsertLocal,
    InsertRemote,
    Lagged,
    LiveEvent,
    PendingContentReady,
    ShareMode,
    SyncFinished,
)
from irohpy.protocols.docs.entry import ContentStatus, SignedEntry
from irohpy.protocols.docs.keys import Author, AuthorId, NamespaceId, NamespaceSecret
from irohpy.protocols.docs.replica import DownloadPolicy, FilterKind
from irohpy.protocols.docs.ticket import DocTicket
from irohpy.protocols.docs.wire import ALPN

__all__ = [
    "ALPN",
    "Author",
    "AuthorId",
    "ContentReady",
    "ContentStatus",
    "Doc",
    "DocSubscription",
    "DocTicket",
    "Docs",
    "DownloadPolicy",
    "Entry",
    "FilterKind",
    "InsertLocal",
    "InsertRemote",
    "Lagged",
    "LiveEvent",
    "NamespaceId",
    "NamespaceSecret",
    "PendingContentReady",
    "ShareMode",
    "SignedEntry",
    "SyncFinished",
]
