"""Options every networked command shares, with dumbpipe's and sendme's names."""

from __future__ import annotations

import argparse
import os
import sys

from irohpy.base.keys import SecretKey
from irohpy.base.ticket import EndpointTicket
from irohpy.endpoint import presets
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import InvalidKey
from irohpy.relay.map import RelayKind, RelayMode

SECRET_ENV = "IROH_SECRET"


def add_endpoint_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ipv4-addr", metavar="ADDR:PORT", default="0.0.0.0:0",
                        help="IPv4 socket to bind (default 0.0.0.0:0)")
    parser.add_argument("--ipv6-addr", metavar="[ADDR]:PORT", default="[::]:0",
                        help="IPv6 socket to bind (default [::]:0); 'none' to skip IPv6")
    parser.add_argument("--relay", default="default", metavar="disabled|default|URL",
                        help="which relays to use (default: number 0's public relays)")


def secret_from_env() -> SecretKey:
    """IROH_SECRET (hex) if set, so a restart keeps the EndpointId; else a fresh key."""
    value = os.environ.get(SECRET_ENV)
    if not value:
        return SecretKey.generate()
    try:
        return SecretKey.parse(value.strip())
    except InvalidKey as exc:
        raise InvalidKey(f"{SECRET_ENV} is not a valid secret key: {exc}") from None


def relay_mode(value: str) -> RelayMode:
    if value == "disabled":
        return RelayMode.disabled()
    if value == "default":
        return RelayMode.default()
    return RelayMode.custom([value])


async def bind_endpoint(args: argparse.Namespace, alpns: list[bytes]) -> Endpoint:
    binds = [args.ipv4_addr]
    if args.ipv6_addr != "none":
        binds.append(args.ipv6_addr)
    mode = relay_mode(args.relay)
    return await Endpoint.bind(
        secret_key=secret_from_env(),
        alpns=alpns,
        preset=presets.MINIMAL if mode.kind is RelayKind.DISABLED else presets.N0,
        relay_mode=mode,
        bind_addrs=binds,
    )


def ticket_for(endpoint: Endpoint) -> EndpointTicket:
    return EndpointTicket(endpoint.addr())


def eprint(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)
