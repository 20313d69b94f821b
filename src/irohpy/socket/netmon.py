"""Noticing that this host's network changed, as soon as the kernel says so.

On Linux a NETLINK_ROUTE socket subscribed to link, address and route changes wakes us within
milliseconds of a renumbering or a lost uplink, as iroh's netmon does; events coming in a burst
(an address removed, another added, the default route replaced) are waited out for
:data:`DEBOUNCE` so they make one change. Elsewhere, or where netlink is refused, we look every
:data:`POLL` seconds. Either way the caller re-reads its addresses and decides what changed:
the messages themselves are never parsed.
"""

from __future__ import annotations

import asyncio
import socket
import sys

#: Quiet time after the last netlink message before a change counts (iroh waits 250 ms).
DEBOUNCE = 0.1
#: How often addresses are read without netlink.
POLL = 1.0
#: With netlink, how often we look anyway (a message lost to a full buffer changes nothing).
SAFETY_POLL = 30.0

# <linux/rtnetlink.h> multicast groups.
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE


def _netlink() -> socket.socket | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except OSError:
        return None
    try:
        sock.bind((0, GROUPS))
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    return sock


class NetworkMonitor:
    """Wakes :meth:`changed` when the network may have changed; :meth:`close` when done."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = _netlink()
        #: A message came since the last wake-up.
        self._pending = False
        #: What :meth:`changed` waits on (a bare future: no task per monitor).
        self._waiter: asyncio.Future[None] | None = None
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)

    @property
    def uses_netlink(self) -> bool:
        return self._sock is not None

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                if not sock.recv(65536):
                    break
            except BlockingIOError:
                break
            except OSError:
                break  # ENOBUFS: messages were lost, which is a change all the same
        self._pending = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def changed(self) -> None:
        """Return once something may have changed: a burst of netlink messages went quiet, or
        the poll interval passed."""
        if self._sock is None:
            await asyncio.sleep(POLL)
            return
        if not self._pending:
            self._waiter = self._loop.create_future()
            timer = self._loop.call_later(SAFETY_POLL, self._wake)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        while self._pending:
            self._pending = False
            await asyncio.sleep(DEBOUNCE)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()
