"""A host program for the port-mapping lab tests: map a UDP socket's port, then echo through it.

``python -m tests.portmap_host PROTOCOLS SECONDS`` (PROTOCOLS: comma-separated
``pcp,nat_pmp,upnp``) binds a UDP socket, runs a :class:`Portmapper` for its port, and
prints one JSON line per event: ``mapped`` (with the external address), ``received``
(a datagram from outside, echoed back), and ``released`` once a datagram ``close`` made
it close the Portmapper (which deletes the mapping).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

from irohpy.portmapper import Portmapper, Protocol


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


async def main(protocols: tuple[Protocol, ...], seconds: float) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    mapped = asyncio.Event()
    mapper: Portmapper | None = None

    def changed() -> None:
        assert mapper is not None
        m = mapper.mapping
        if m is not None:
            emit(event="mapped", external=list(m.external), protocol=str(m.protocol), local_port=port,
                 lifetime=m.lifetime)
            mapped.set()

    mapper = Portmapper(port, on_change=changed, protocols=protocols)
    try:
        async with asyncio.timeout(seconds):
            await mapped.wait()
            emit(event="probe", pcp=mapper.probe.pcp, nat_pmp=mapper.probe.nat_pmp, upnp=mapper.probe.upnp)
            while True:
                data, sender = await loop.sock_recvfrom(sock, 2048)
                if data == b"close":
                    break
                emit(event="received", data=data.decode(errors="replace"), sender=list(sender))
                await loop.sock_sendto(sock, b"echo:" + data, sender)
    finally:
        await mapper.close()
        sock.close()
    emit(event="released")


if __name__ == "__main__":
    names, secs = sys.argv[1], float(sys.argv[2])
    asyncio.run(main(tuple(Protocol(n) for n in names.split(",")), secs))
