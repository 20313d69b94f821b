"""Mapped addresses: the stable per-remote address QUIC sees.

The QUIC engine treats addresses as opaque hashable keys. Giving it one token per
remote endpoint keeps QUIC blind to path changes (direct, relay, a new NAT
mapping), which is the design of iroh's magicsock before 1.0.
"""

from __future__ import annotations

import itertools

_counter = itertools.count(1)


class MappedAddr:
    """An opaque, unique, hashable address token (identity semantics)."""

    __slots__ = ("token",)

    def __init__(self) -> None:
        self.token = next(_counter)

    def __repr__(self) -> str:
        return f"MappedAddr(#{self.token})"
