"""Dial by EndpointId alone through a local Mainline DHT swarm (20 real nodes on loopback)."""

from __future__ import annotations

import asyncio
import contextlib

from irohpy import SecretKey
from irohpy.lookup.base import EndpointData
from irohpy.lookup.dht import DhtNode
from irohpy.lookup.mainline import MainlineLookup
from irohpy.lookup.pkarr_client import everything
from tests.helpers import accept_one, bind

ALPN = b"test/dht-dial/0"
SWARM = 20


async def test_dial_by_id_through_local_mainline_swarm() -> None:
    async with contextlib.AsyncExitStack() as stack:
        seed = await DhtNode.bind()
        stack.push_async_callback(seed.close)
        nodes = [seed]
        for _ in range(SWARM - 1):
            node = await DhtNode.bind(bootstrap=[seed.address], lookup_timeout=5.0)
            stack.push_async_callback(node.close)
            nodes.append(node)
        await asyncio.gather(*(n.bootstrap() for n in nodes[1:]))

        server_node = await DhtNode.bind(bootstrap=[nodes[3].address], lookup_timeout=5.0)
        stack.push_async_callback(server_node.close)
        client_node = await DhtNode.bind(bootstrap=[nodes[17].address], lookup_timeout=5.0)
        stack.push_async_callback(client_node.close)
        await asyncio.gather(server_node.bootstrap(), client_node.bootstrap())

        server = await bind([ALPN])
        stack.push_async_callback(server.close)
        publisher = MainlineLookup(server_node, server.secret_key, addr_filter=everything)
        server.address_lookup.add(publisher)
        publisher.publish(EndpointData.from_addr(server.addr()))
        async with asyncio.timeout(15):
            while publisher.stored_on == 0:
                await asyncio.sleep(0.05)

        secret = SecretKey.generate()  # a lookup that publishes signs with the endpoint's own key
        client = await bind(secret_key=secret, address_lookup=[MainlineLookup(client_node, secret)])
        stack.push_async_callback(client.close)
        accepted = asyncio.create_task(accept_one(server, 15))
        conn = await client.connect(server.id, ALPN, timeout=15)
        assert conn.remote_id == server.id
        await accepted
        conn.close()
