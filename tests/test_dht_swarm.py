"""A local Mainline DHT swarm on 127.0.0.1: real UDP nodes bootstrapped only from one another."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from irohpy.base.keys import SecretKey
from irohpy.errors import DhtError
from irohpy.lookup.dht import DhtNode, bencode, publish_signed, resolve_signed
from irohpy.lookup.dht.storage import mutable_target
from irohpy.lookup.signing import bep44_signable

SWARM_SIZE = 24
pytestmark = pytest.mark.timeout(30)


async def _node(bootstrap: list[tuple[str, int]]) -> DhtNode:
    return await DhtNode.bind(
        "127.0.0.1", 0, bootstrap=bootstrap, query_timeout=0.5, lookup_timeout=5.0
    )


@asynccontextmanager
async def swarm(size: int = SWARM_SIZE) -> AsyncIterator[list[DhtNode]]:
    """``size`` nodes; each bootstraps from the first node and a random earlier one."""
    nodes: list[DhtNode] = []
    try:
        nodes.append(await _node([]))
        for _ in range(size - 1):
            seeds = [nodes[0].address, random.choice(nodes).address]
            node = await _node(seeds)
            nodes.append(node)
            assert await node.bootstrap() > 0
        for node in nodes[:4]:  # the first nodes learn about the later ones
            node.bootstrap_nodes = (nodes[-1].address,)
            await node.bootstrap()
        yield nodes
    finally:
        for node in nodes:
            await node.close()


async def test_a_stranger_resolves_what_an_offline_publisher_stored() -> None:
    async with swarm() as nodes:
        key = SecretKey.generate()
        value = os.urandom(300)
        publisher = await _node([nodes[5].address])
        try:
            await publisher.bootstrap()
            stored = await publisher.put_mutable(key, 1_700_000_000_000_000, value)
        finally:
            await publisher.close()
        assert stored >= 3
        holders = sum(n.store.get(mutable_target(key.public()), 0.0) is not None for n in nodes)
        assert holders >= 3

        # The publisher is gone; this node joins later through a different node.
        getter = await _node([nodes[17].address])
        try:
            assert await getter.bootstrap() > 0
            assert publisher.node_id not in getter.routing
            found = await resolve_signed(getter, key.public())
        finally:
            await getter.close()
        assert found is not None
        seq, got, sig = found
        assert (seq, got) == (1_700_000_000_000_000, value)
        key.public().verify(bep44_signable(seq, got), sig)


async def test_newer_seq_replaces_older_and_older_is_refused() -> None:
    async with swarm() as nodes:
        key = SecretKey.generate()
        pk = key.public()
        assert await nodes[3].put_mutable(key, 1, b"first") > 0
        newer = key.sign(bep44_signable(2, b"second"))
        assert await publish_signed(nodes[9], pk, 2, b"second", newer) > 0
        target = mutable_target(pk)
        holders = [n for n in nodes if getattr(n.store.get(target, 0.0), "seq", None) == 2]
        assert len(holders) >= 3
        stale = key.sign(bep44_signable(1, b"first"))
        await publish_signed(nodes[20], pk, 1, b"first", stale)
        assert all(n.store.get(target, 0.0).seq == 2 for n in holders)  # type: ignore[union-attr]
        found = await resolve_signed(nodes[14], pk)
        assert found is not None and found[:2] == (2, b"second")
        assert await resolve_signed(nodes[14], SecretKey.generate().public()) is None


async def test_forged_items_are_not_stored() -> None:
    async with swarm() as nodes:
        victim, attacker = SecretKey.generate(), SecretKey.generate()
        forged_sig = attacker.sign(bep44_signable(5, b"evil"))
        with pytest.raises(DhtError) as local:
            await publish_signed(nodes[0], victim.public(), 5, b"evil", forged_sig)
        assert local.value.code == 206

        # Bypass the local check: send the forged put straight to every node.
        target = mutable_target(victim.public())
        sender = nodes[1]
        for node in nodes[2:]:
            reply = await sender.request(node.address, "get", target=target)
            with pytest.raises(DhtError) as remote:
                await sender.request(
                    node.address, "put", token=reply.token, k=victim.public().to_bytes(), seq=5,
                    v=b"evil", sig=forged_sig.to_bytes(),
                )
            assert remote.value.code == 206
            assert node.store.get(target, 0.0) is None
        with pytest.raises(DhtError) as bad_token:
            await sender.request(
                nodes[2].address, "put", token=b"guess", k=victim.public().to_bytes(), seq=6,
                v=b"x", sig=victim.sign(bep44_signable(6, b"x")).to_bytes(),
            )
        assert bad_token.value.code == 203
        assert await resolve_signed(nodes[7], victim.public()) is None


async def test_nodes_survive_garbage_datagrams() -> None:
    async with swarm() as nodes:
        rng = random.Random(1234)
        junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))) for _ in range(40)]
        junk += [
            b"d1:t2:aa1:y1:qe",
            bencode.encode({b"t": b"aa", b"y": b"r", b"r": {b"id": b"\x00" * 20}}),
            bencode.encode({b"t": b"aa", b"y": b"q", b"q": b"find_node", b"a": {b"id": b"x"}}),
            b"l" * 5000,
            # Well-formed queries with hostile contents: the node answers with an error reply.
            bencode.encode({b"t": b"p1", b"y": b"q", b"q": b"put", b"a": {
                b"id": b"\x01" * 20, b"token": b"x", b"k": b"\xff" * 32, b"seq": 2**80,
                b"v": b"v", b"sig": b"\x00" * 64}}),
            bencode.encode({b"t": b"p2", b"y": b"q", b"q": b"announce_peer", b"a": {
                b"id": b"\x01" * 20, b"info_hash": b"\x02" * 20, b"port": 0, b"token": b""}}),
            bencode.encode({b"t": b"p3", b"y": b"q", b"q": b"get", b"a": {
                b"id": b"\x01" * 20, b"target": b"\x02" * 20, b"seq": 2**80}}),
            b"",
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for node in nodes:
                for datagram in junk:
                    sock.sendto(datagram, node.address)
        probe = await _node([])
        try:
            for node in nodes:
                reply = await probe.request(node.address, "ping")
                assert reply.node_id == node.node_id
            with pytest.raises(DhtError) as unknown:
                await probe.request(nodes[0].address, "vote", target=b"\x00" * 20)
            assert unknown.value.code == 204
        finally:
            await probe.close()
        assert all(node.dropped_datagrams > 0 for node in nodes)
        key = SecretKey.generate()
        assert await nodes[2].put_mutable(key, 7, b"still working") > 0
        found = await resolve_signed(nodes[21], key.public())
        assert found is not None and found[1] == b"still working"


async def test_closed_node_fails_queries_with_dht_error() -> None:
    node = await _node([])
    other = await _node([])
    try:
        await other.close()
        with pytest.raises(DhtError):
            await node.request(other.address, "ping")
        await node.close()
        with pytest.raises(DhtError):
            await node.request(other.address, "ping")
        assert await node.get_mutable(SecretKey.generate().public()) is None
    finally:
        await node.close()
        await other.close()
