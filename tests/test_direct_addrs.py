"""Which of our addresses an endpoint announces (``Endpoint.addr()``, ADD_ADDRESS): a socket on
the unspecified address stands for every interface address, loopback only when there is
nothing else, as iroh announces them. The host's interfaces are given, so the test means the
same on any machine; the sockets are real."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import pytest

from irohpy import Endpoint, RelayMode, presets
from irohpy.portmapper import PortmapperConfig
from irohpy.socket import direct_addrs


def _interfaces(v4: list[str], v6: list[str]) -> Callable[[socket.AddressFamily], list[str]]:
    return lambda family: list(v4 if family == socket.AF_INET else v6)


@pytest.fixture
async def bind(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., object]]:
    endpoints: list[Endpoint] = []

    async def _bind(v4: list[str], v6: list[str], bind_addrs: list[str]) -> Endpoint:
        monkeypatch.setattr(direct_addrs, "interface_addrs", _interfaces(v4, v6))
        ep = await Endpoint.bind(preset=presets.MINIMAL, relay_mode=RelayMode.disabled(), bind_addrs=bind_addrs,
                                 portmapper_config=PortmapperConfig.DISABLED)
        endpoints.append(ep)
        return ep

    yield _bind
    for ep in endpoints:
        await ep.close()


def _ips(ep: Endpoint) -> set[tuple[str, int]]:
    return {(str(a.host), a.port) for a in ep.addr().ip_addrs()}


def _ports(ep: Endpoint) -> dict[int, int]:
    return {4 if ":" not in host else 6: port for host, port in ep.bound_sockets()}


async def test_loopback_is_left_out_when_the_host_has_other_addresses(bind: Callable[..., object]) -> None:
    ep = await bind(["10.1.2.3", "127.0.0.1"], ["fd00::7", "::1"], ["0.0.0.0:0", "[::]:0"])  # type: ignore[misc]
    ports = _ports(ep)
    assert _ips(ep) == {("10.1.2.3", ports[4]), ("fd00::7", ports[6])}


async def test_another_family_counts_as_something_else(bind: Callable[..., object]) -> None:
    ep = await bind(["127.0.0.1"], ["fd00::7", "::1"], ["0.0.0.0:0", "[::]:0"])  # type: ignore[misc]
    assert _ips(ep) == {("fd00::7", _ports(ep)[6])}


async def test_loopback_is_announced_when_it_is_all_there_is(bind: Callable[..., object]) -> None:
    ep = await bind(["127.0.0.1"], ["::1"], ["0.0.0.0:0", "[::]:0"])  # type: ignore[misc]
    ports = _ports(ep)
    assert _ips(ep) == {("127.0.0.1", ports[4]), ("::1", ports[6])}


async def test_a_public_address_also_counts_as_something_else(bind: Callable[..., object]) -> None:
    ep = await bind(["127.0.0.1"], ["::1"], ["0.0.0.0:0"])  # type: ignore[misc]
    ep._direct.on_qad({("203.0.113.9", 4000)})  # what the home relay's QAD would report
    assert _ips(ep) == {("203.0.113.9", 4000)}


async def test_a_socket_bound_to_loopback_is_announced(bind: Callable[..., object]) -> None:
    ep = await bind(["10.1.2.3", "127.0.0.1"], ["::1"], ["127.0.0.1:0"])  # type: ignore[misc]
    assert _ips(ep) == {("127.0.0.1", _ports(ep)[4])}
