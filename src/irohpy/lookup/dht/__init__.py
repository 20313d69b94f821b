"""Mainline DHT (BEP 5) with BEP 44 mutable items: iroh's opt-in Mainline address lookup.

The sans-IO core lives in ``bencode``, ``krpc``, ``routing``, ``lookup`` and ``storage``;
:class:`DhtNode` is the asyncio UDP driver. The helpers below move the raw signed record
(seq = pkarr timestamp in µs, value = pkarr DNS message, sig) and treat the value as opaque.
"""

from __future__ import annotations

from irohpy.base.keys import PublicKey, Signature
from irohpy.lookup.dht.node import DhtNode
from irohpy.lookup.dht.storage import MutableItem, mutable_target


async def publish_signed(
    node: DhtNode, public_key: PublicKey, seq: int, value: bytes, sig: Signature
) -> int:
    """Store an already signed record (e.g. a pkarr packet's parts); returns how many nodes took it.

    Raises DhtError (code 206) if the signature does not verify, or 205 if ``value`` is too big.
    """
    return await node.put_item(MutableItem(public_key, seq, bytes(value), sig))


async def resolve_signed(node: DhtNode, public_key: PublicKey) -> tuple[int, bytes, Signature] | None:
    """The most recent verified record for ``public_key``: (seq, value, sig), or None."""
    return await node.get_mutable(public_key)


__all__ = ["DhtNode", "MutableItem", "mutable_target", "publish_signed", "resolve_signed"]
