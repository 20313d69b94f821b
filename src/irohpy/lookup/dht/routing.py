"""The Kademlia routing table (BEP 5): 160 k-buckets by XOR-distance prefix, no I/O.

Bucket ``i`` holds the nodes whose XOR distance to our id has bit length ``i + 1``. A full
bucket keeps its nodes (long-lived nodes tend to stay up) unless one of them has failed to
answer repeatedly; newcomers then replace that one.
"""

from __future__ import annotations

from dataclasses import dataclass

from irohpy.lookup.dht.krpc import ID_LENGTH, NodeInfo

K = 8
MAX_FAILURES = 2


def distance(a: bytes, b: bytes) -> int:
    """The Kademlia XOR metric between two 20-byte ids."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


@dataclass
class _Entry:
    info: NodeInfo
    last_seen: float
    failures: int = 0


class RoutingTable:
    """The nodes we know, grouped so that we know many near us and a few far away."""

    def __init__(self, own_id: bytes, *, k: int = K) -> None:
        if len(own_id) != ID_LENGTH:
            raise ValueError("node ids are 20 bytes")
        self.own_id = own_id
        self.k = k
        self._buckets: list[list[_Entry]] = [[] for _ in range(ID_LENGTH * 8)]

    def _bucket(self, node_id: bytes) -> list[_Entry]:
        return self._buckets[distance(self.own_id, node_id).bit_length() - 1]

    def add(self, info: NodeInfo, now: float) -> bool:
        """Record that ``info`` was heard from at ``now``; False if its bucket had no room."""
        if info.node_id == self.own_id or len(info.node_id) != ID_LENGTH:
            return False
        bucket = self._bucket(info.node_id)
        for i, entry in enumerate(bucket):
            if entry.info.node_id == info.node_id:
                del bucket[i]
                bucket.append(_Entry(info, now))
                return True
        if len(bucket) < self.k:
            bucket.append(_Entry(info, now))
            return True
        for i, entry in enumerate(bucket):
            if entry.failures >= MAX_FAILURES:
                del bucket[i]
                bucket.append(_Entry(info, now))
                return True
        return False

    def mark_failed(self, node_id: bytes) -> None:
        """A query to ``node_id`` went unanswered; after MAX_FAILURES it may be replaced."""
        if node_id == self.own_id or len(node_id) != ID_LENGTH:
            return
        for entry in self._bucket(node_id):
            if entry.info.node_id == node_id:
                entry.failures += 1

    def remove(self, node_id: bytes) -> None:
        if node_id == self.own_id or len(node_id) != ID_LENGTH:
            return
        bucket = self._bucket(node_id)
        bucket[:] = [e for e in bucket if e.info.node_id != node_id]

    def closest(self, target: bytes, count: int | None = None) -> list[NodeInfo]:
        """The ``count`` (default k) known nodes nearest ``target``, healthy ones first."""
        entries = [e for bucket in self._buckets for e in bucket]
        entries.sort(key=lambda e: (e.failures >= MAX_FAILURES, distance(e.info.node_id, target)))
        return [e.info for e in entries[: count or self.k]]

    def __contains__(self, node_id: object) -> bool:
        if not isinstance(node_id, bytes) or node_id == self.own_id or len(node_id) != ID_LENGTH:
            return False
        return any(e.info.node_id == node_id for e in self._bucket(node_id))

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets)

    def nodes(self) -> list[NodeInfo]:
        return [e.info for bucket in self._buckets for e in bucket]
