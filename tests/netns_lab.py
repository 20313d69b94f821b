"""A two-host LAN made of network namespaces, and the mDNS node program run inside it.

``lan(prefix)`` builds hosts ``a`` (10.99.0.1, 2001:db8:99::1) and ``b`` (10.99.0.2,
2001:db8:99::2) on a bridge in a third
namespace and always deletes them again. ``python -m tests.netns_lab announce|browse ...`` is
the per-namespace program: it prints one JSON line per event on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

HOSTS = {"a": "10.99.0.1", "b": "10.99.0.2"}
HOSTS_V6 = {"a": "2001:db8:99::1", "b": "2001:db8:99::2"}
_SYSCTLS = (
    "net/ipv4/conf/all/rp_filter",
    "net/ipv4/conf/default/rp_filter",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/bridge/bridge-nf-call-arptables",
)


def _ip(args: list[str], script: str) -> None:
    result = subprocess.run(["ip", *args, "-b", "-"], input=script, text=True, timeout=10, capture_output=True)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)} -b failed: {result.stderr.strip()}")


def _zero_sysctls(ns: str) -> None:
    """New namespaces copy rp_filter and may filter bridged frames; neither must touch the lab."""
    writes = "; ".join(f"[ -e /proc/sys/{k} ] && echo 0 > /proc/sys/{k}" for k in _SYSCTLS)
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", writes + "; true"], check=True, timeout=10)


@contextlib.contextmanager
def lan(prefix: str = "mdns") -> Iterator[dict[str, str]]:
    """Namespaces ``{role: name}`` for roles ``br``, ``a``, ``b``; removed on exit, even on failure."""
    tag = f"{prefix}{os.getpid()}x{secrets.token_hex(2)}"
    names = {role: f"{tag}-{role}" for role in ("br", *HOSTS)}
    try:
        _ip([], "".join(f"netns add {n}\n" for n in names.values()) + "".join(
            f"link add name eth0 netns {names[h]} type veth peer name v{h} netns {names['br']}\n" for h in HOSTS
        ))
        _ip(["-n", names["br"]], "link set lo up\nlink add br0 type bridge\nlink set br0 up\n" + "".join(
            f"link set v{h} master br0\nlink set v{h} up\n" for h in HOSTS
        ))
        for host, addr in HOSTS.items():
            _ip(
                ["-n", names[host]],
                f"link set lo up\naddr add {addr}/24 dev eth0\naddr add {HOSTS_V6[host]}/64 dev eth0 nodad\n"
                "link set eth0 up\n",
            )
        for name in names.values():
            _zero_sysctls(name)
        yield names
    finally:
        for name in names.values():
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10).stdout
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
        subprocess.run(["ip", "-b", "-"], input="".join(f"netns del {n}\n" for n in names.values()),
                       text=True, capture_output=True, timeout=10)


def _emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


async def _node(role: str, interface: str, seed: int, target: str | None, seconds: float) -> None:
    from irohpy.base.addr import IpAddr  # noqa: PLC0415 - keep the lab importable without irohpy
    from irohpy.base.keys import PublicKey, SecretKey  # noqa: PLC0415
    from irohpy.base.relay_url import RelayUrl  # noqa: PLC0415
    from irohpy.lookup.base import EndpointData  # noqa: PLC0415
    from irohpy.lookup.mdns import MdnsLookup  # noqa: PLC0415

    me = SecretKey(bytes([seed]) * 32).public()
    relay = RelayUrl(f"https://relay-{role}.example/")
    async with MdnsLookup(me, interfaces=[interface], resolve_timeout=seconds) as lookup:
        lookup.publish(EndpointData(frozenset({relay}), frozenset({IpAddr(interface.partition('%')[0], 4433)})))
        _emit(event="ready", id=str(me))
        if target is None:
            await asyncio.sleep(seconds)
            return
        async for item in lookup.resolve(PublicKey.parse(target)):
            data = item.info.data
            _emit(
                event="found",
                id=str(item.info.endpoint_id),
                provenance=item.provenance,
                addrs=sorted(str(a) for a in data.ip_addrs),
                relays=sorted(str(r) for r in data.relay_urls),
            )


async def _endpoint(role: str, interface: str, seed: int, target: str | None, seconds: float) -> None:
    """An irohpy Endpoint whose only address lookup is mDNS: serve an echo, or dial by id alone."""
    from irohpy import Endpoint, presets  # noqa: PLC0415
    from irohpy.base.keys import PublicKey, SecretKey  # noqa: PLC0415
    from irohpy.lookup.mdns import MdnsLookup  # noqa: PLC0415

    alpn = b"irohpy/lab-echo/0"
    secret = SecretKey(bytes([seed]) * 32)
    async with MdnsLookup(secret.public(), interfaces=[interface], resolve_timeout=seconds) as lookup:
        endpoint = await Endpoint.bind(secret_key=secret, preset=presets.MINIMAL, alpns=[alpn],
                                       bind_addrs=[f"{interface}:0"], address_lookup=[lookup])
        async with endpoint:
            _emit(event="ready", id=str(endpoint.id))
            async with asyncio.timeout(seconds):
                if target is None:
                    incoming = await endpoint.accept()
                    assert incoming is not None
                    conn = await incoming.accept()
                    send, recv = await conn.accept_bi()
                    await send.write_all(await recv.read_to_end(1000))
                    await send.finish()
                    await conn.closed()
                    return
                conn = await endpoint.connect(PublicKey.parse(target), alpn)
                send, recv = await conn.open_bi()
                await send.write_all(b"found you by id")
                await send.finish()
                reply = await recv.read_to_end(1000)
                path = conn.path
                _emit(event="echo", reply=reply.decode(), remote=str(conn.remote_id), path=list(path))
                conn.close(0, b"bye")


def main(argv: list[str]) -> None:
    """``announce|browse IFACE SEED SECONDS [TARGET_ID]``, or ``serve|dial ...`` with an Endpoint."""
    role, interface, seed, seconds, *rest = argv
    node = _endpoint if role in ("serve", "dial") else _node
    asyncio.run(node(role, interface, int(seed), rest[0] if rest else None, float(seconds)))
    _emit(event="done")


if __name__ == "__main__":
    main(sys.argv[1:])
