"""Options every networked command shares, with dumbpipe's and sendme's names.

``add_endpoint_args(parser)`` adds them; ``await endpoint_from_args(args, alpns)`` binds the
endpoint they describe and, for commands that print a ticket, waits (bounded) for the home
relay first, so the ticket carries it. Nothing public is contacted unless asked for: number 0's
relays and DNS only with ``--relay default`` (the default) or ``--lookup n0``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterable

from irohpy.base.keys import SecretKey
from irohpy.base.relay_url import RelayUrl
from irohpy.base.ticket import EndpointTicket
from irohpy.endpoint import presets
from irohpy.endpoint.endpoint import Endpoint
from irohpy.errors import InvalidKey, RelayAuthError
from irohpy.lookup.base import AddressLookup
from irohpy.lookup.dns import DnsAddressLookup
from irohpy.lookup.pkarr_client import PkarrPublisher, PkarrResolver
from irohpy.relay import defaults
from irohpy.relay.map import RelayConfig, RelayMap, RelayMode

SECRET_ENV = "IROH_SECRET"
RELAY_TOKEN_ENV = "IROH_RELAY_TOKEN"
# dumbpipe waits 5 s and sendme 30 s; a loaded machine needs more than 5.
ONLINE_TIMEOUT = 10.0
ONLINE_POLL = 0.05

LOOKUP_HELP = ("address lookup, repeatable: 'n0' (number 0's DNS), 'none', a pkarr URL "
               "(publish and resolve there, e.g. irohpy dns-server's http://HOST:PORT/pkarr), or "
               "'dns:ZONE@HOST:PORT' (resolve through that DNS server); default: n0 with "
               "--relay default, else none")


def add_endpoint_args(parser: argparse.ArgumentParser) -> None:
    """The endpoint options: identity, relays, relay token, address lookup, bind addresses."""
    group = parser.add_argument_group("endpoint")
    group.add_argument("--key", metavar="FILE",
                       help=f"secret key file for a persistent EndpointId (irohpy key generate --out FILE); "
                            f"default ${SECRET_ENV} (hex), else a new key per run")
    group.add_argument("--relay", default="default", metavar="disabled|default|URL",
                       help="which relays to use (default: number 0's public relays)")
    group.add_argument("--relay-token", metavar="TOKEN", default=os.environ.get(RELAY_TOKEN_ENV),
                       help=f"access token presented to the relays (default ${RELAY_TOKEN_ENV})")
    group.add_argument("--lookup", action="append", metavar="n0|none|PKARR_URL|dns:ZONE@HOST:PORT",
                       help=LOOKUP_HELP)
    group.add_argument("--ipv4-addr", metavar="ADDR:PORT", default="0.0.0.0:0",
                       help="IPv4 socket to bind (default 0.0.0.0:0)")
    group.add_argument("--ipv6-addr", metavar="[ADDR]:PORT", default="[::]:0",
                       help="IPv6 socket to bind (default [::]:0); 'none' to skip IPv6")


def positive_int(text: str) -> int:
    """An argparse type for counts and sizes: 0 or less would make the command do nothing, silently."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def secret_from_args(args: argparse.Namespace, *, required: bool = False) -> SecretKey:
    """``--key FILE``, else $IROH_SECRET (hex), else a fresh key (an error when ``required``)."""
    if getattr(args, "key", None):
        return SecretKey.load(args.key)
    value = os.environ.get(SECRET_ENV)
    if not value:
        if required:
            raise InvalidKey(f"no persistent key: pass --key FILE or set {SECRET_ENV} "
                             f"(make one with: irohpy key generate --out FILE)")
        return SecretKey.generate()
    try:
        return SecretKey.parse(value.strip())
    except InvalidKey as exc:
        raise InvalidKey(f"{SECRET_ENV} is not a valid secret key: {exc}") from None


def relay_mode(value: str, token: str | None = None) -> RelayMode:
    """``--relay``: 'disabled', 'default' (number 0's relays) or one relay URL; ``token`` goes to each."""

    if value == "disabled":
        return RelayMode.disabled()
    mode = RelayMode.default() if value == "default" else RelayMode.custom([RelayUrl.parse(value)])
    if not token:
        return mode
    relays = RelayMap(RelayConfig(r.url, r.quic_port, auth_token=token) for r in mode.relay_map)
    return RelayMode(mode.kind, relays)


def lookups_from_args(args: argparse.Namespace, secret: SecretKey) -> list[AddressLookup]:
    """``--lookup`` values as address lookups; n0 only when asked for or with number 0's relays."""

    values: Iterable[str] = args.lookup or (["n0"] if args.relay == "default" else ["none"])
    lookups: list[AddressLookup] = []
    for value in values:
        if value == "none":
            continue
        if value == "n0":
            lookups += [PkarrPublisher(secret, defaults.PROD_PKARR_RELAY), PkarrResolver(defaults.PROD_PKARR_RELAY),
                        DnsAddressLookup(defaults.PROD_DNS_ORIGIN)]
        elif value.startswith(("http://", "https://")):
            lookups += [PkarrPublisher(secret, value), PkarrResolver(value)]
        elif value.startswith("dns:"):
            zone, at, server = value[4:].partition("@")
            host, sep, port = server.rpartition(":")
            if not zone or not at or not sep or not port.isdigit():
                raise ValueError(f"--lookup dns: expects dns:ZONE@HOST:PORT, got {value!r}")
            lookups.append(DnsAddressLookup(zone, nameservers=[(host.strip("[]"), int(port))]))
        else:
            raise ValueError(f"--lookup takes n0, none, a pkarr URL or dns:ZONE@HOST:PORT, not {value!r}")
    return lookups


def _binds(args: argparse.Namespace) -> list[str]:
    binds = [args.ipv4_addr]
    if args.ipv6_addr != "none":
        binds.append(args.ipv6_addr)
    return binds


async def endpoint_from_args(args: argparse.Namespace, alpns: Iterable[bytes] = (), *,
                             wait_online: bool = True, online_timeout: float = ONLINE_TIMEOUT) -> Endpoint:
    """Bind the endpoint the options describe.

    With ``wait_online`` (commands that print a ticket) it waits up to ``online_timeout`` for a
    home relay, so the ticket names it. A relay that refuses us is an error; one that stays
    unreachable is reported once on stderr and the command goes on with direct addresses.
    """

    secret = secret_from_args(args)
    mode = relay_mode(args.relay, args.relay_token)
    endpoint = await Endpoint.bind(secret_key=secret, alpns=list(alpns), preset=presets.MINIMAL, relay_mode=mode,
                                   bind_addrs=_binds(args), address_lookup=lookups_from_args(args, secret))
    if wait_online and args.relay != "disabled":
        try:
            await wait_for_home_relay(endpoint, online_timeout)
        except BaseException:
            await endpoint.close()
            raise
    return endpoint


async def wait_for_home_relay(endpoint: Endpoint, timeout: float = ONLINE_TIMEOUT) -> bool:
    """True once a home relay is connected; raises if a relay refuses us; warns and gives False on timeout."""

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    online = asyncio.ensure_future(endpoint.online())
    try:
        while not online.done():
            refused = [p for p in endpoint.relay_problems() if p.refused]
            if refused:
                raise RelayAuthError(f"relay {refused[0].url} refused us: {refused[0].error}; pass "
                                     f"--relay-token TOKEN or set {RELAY_TOKEN_ENV}")
            left = deadline - loop.time()
            if left <= 0:
                problems = "; ".join(p.error for p in endpoint.relay_problems()) or "no relay answered"
                eprint(f"warning: no home relay after {timeout:.0f} s ({problems}); "
                       f"the ticket holds direct addresses only")
                return False
            await asyncio.wait([online], timeout=min(ONLINE_POLL, left))
        return True
    finally:
        online.cancel()
        await asyncio.gather(online, return_exceptions=True)


def ticket_for(endpoint: Endpoint) -> EndpointTicket:

    return EndpointTicket(endpoint.addr())


def eprint(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)
