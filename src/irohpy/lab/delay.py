"""A userspace link with delay and jitter, for kernels without ``tc netem``.

``python -m irohpy.lab.delay NS_A DEV_A NS_B DEV_B DELAY_MS JITTER_MS`` attaches to
two persistent TAP devices, each in its own namespace (a TAP fd belongs to the
namespace that is current when ``/dev/net/tun`` is opened), and copies every
Ethernet frame from one to the other after ``DELAY_MS`` ± uniform ``JITTER_MS``.
It prints one JSON line ``{"event": "ready"}`` once both are attached, and runs
until killed. Loss is left to the routers' nftables rules.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import struct
import sys

from irohpy.lab import netns

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65536


def open_tap(ns: str, dev: str) -> int:
    """An fd for TAP ``dev`` in namespace ``ns``; frames without packet info."""
    with netns.enter(ns):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", dev.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class DelayLine:
    """Copies frames ``src`` → ``dst`` after a delay; frames the kernel refuses are dropped."""

    def __init__(self, loop: asyncio.AbstractEventLoop, src: int, dst: int, delay: float, jitter: float) -> None:
        self._loop = loop
        self._src = src
        self._dst = dst
        self._delay = delay
        self._jitter = jitter
        loop.add_reader(src, self._readable)

    def _readable(self) -> None:
        while True:
            try:
                frame = os.read(self._src, MAX_FRAME)
            except BlockingIOError:
                return
            delay = self._delay + random.uniform(-self._jitter, self._jitter)
            self._loop.call_later(max(0.0, delay), self._write, frame)

    def _write(self, frame: bytes) -> None:
        try:
            os.write(self._dst, frame)
        except OSError:
            pass  # a full TAP queue drops the frame, as a real link would


async def _run(ns_a: str, dev_a: str, ns_b: str, dev_b: str, delay_ms: float, jitter_ms: float) -> None:
    a = open_tap(ns_a, dev_a)
    b = open_tap(ns_b, dev_b)
    loop = asyncio.get_running_loop()
    DelayLine(loop, a, b, delay_ms / 1000, jitter_ms / 1000)
    DelayLine(loop, b, a, delay_ms / 1000, jitter_ms / 1000)
    print(json.dumps({"event": "ready"}), flush=True)
    await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    ns_a, dev_a, ns_b, dev_b, delay_ms, jitter_ms = argv
    asyncio.run(_run(ns_a, dev_a, ns_b, dev_b, float(delay_ms), float(jitter_ms)))


if __name__ == "__main__":
    main(sys.argv[1:])
