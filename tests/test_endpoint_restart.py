"""A restarted endpoint (same key, same port) ends its peers' old connections at once.

The endpoint runs in a child process that the test SIGKILLs, so no CONNECTION_CLOSE leaves.
What ends the dialer's connection is the new process's stateless reset: its reset key
follows the endpoint's secret key, so the new process computes the old connections' tokens.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from irohpy import SecretKey
from irohpy.base.ticket import EndpointTicket
from irohpy.errors import ConnectionLost
from tests.helpers import bind

ALPN = b"irohpy/test-restart"
IDLE = 60.0  # far longer than the test: only a reset can end the connection in time

CHILD = """
import asyncio, sys
from irohpy import SecretKey, presets
from irohpy.base.ticket import EndpointTicket
from irohpy.endpoint.endpoint import Endpoint

async def main() -> None:
    key = SecretKey.from_bytes(bytes.fromhex(sys.stdin.readline().strip()))
    ep = await Endpoint.bind(secret_key=key, preset=presets.MINIMAL, alpns=[b"%s"],
                             bind_addrs=[sys.argv[1]], idle_timeout=%r)
    print(EndpointTicket.from_addr(ep.addr()), flush=True)
    held = []
    while (incoming := await ep.accept()) is not None:
        held.append(await incoming.accept())

asyncio.run(main())
""" % (ALPN.decode(), IDLE)


def start_child(secret: SecretKey, bind_addr: str) -> tuple[subprocess.Popen[str], EndpointTicket]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, bind_addr], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(secret.to_bytes().hex() + "\n")
    proc.stdin.close()
    line = proc.stdout.readline()
    assert line, "the child endpoint did not start"
    return proc, EndpointTicket.parse(line.strip())


def kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


async def test_a_restarted_endpoint_resets_its_peers_old_connections() -> None:
    secret = SecretKey.generate()
    first, ticket = await asyncio.to_thread(start_child, secret, "127.0.0.1:0")
    second = None
    dialer = await bind([], idle_timeout=IDLE)
    try:
        conn = await dialer.connect(ticket, ALPN, timeout=10)
        stream = await conn.open_uni()
        await stream.write(b"ping")
        port = ticket.endpoint_addr().ip_addrs()[0].port
        kill(first)
        second, again = await asyncio.to_thread(start_child, secret, f"127.0.0.1:{port}")
        assert again.endpoint_addr().id == ticket.endpoint_addr().id
        started = time.monotonic()
        await stream.write(b"x" * 4000)
        async with asyncio.timeout(IDLE / 4):
            reason = await conn.closed()
        assert isinstance(reason, ConnectionLost)
        assert "stateless reset" in str(reason), reason
        print(f"reset {time.monotonic() - started:.3f} s after the first write to the new process")
    finally:
        await dialer.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                kill(proc)
