"""Where an endpoint can be reached: ``EndpointAddr`` = EndpointId + a set of ``TransportAddr``.

The set is a ``BTreeSet`` in iroh, serialised in its derived ``Ord``; our ordering reproduces
that order so encodings are byte-identical: Relay < Ip < Custom; IPs compare IPv4 before
IPv6, then address bytes, then port; relays compare by URL text; custom addresses by id, then
by iroh's inline-vs-heap storage of the data (up to 30 bytes sort before longer data, shorter
before longer, and only then by content).
"""

from __future__ import annotations

import abc
import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Final

from irohpy.base.keys import KEY_LENGTH, EndpointId, PublicKey
from irohpy.base.postcard import Reader, Writer
from irohpy.base.relay_url import RelayUrl
from irohpy.errors import DecodeError, InvalidAddr

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_RELAY, _IP, _CUSTOM = 0, 1, 2
_V4, _V6 = 0, 1
_CUSTOM_INLINE_MAX: Final = 30
_U64_MAX: Final = (1 << 64) - 1


def _ip_text(host: IpAddress) -> str:
    """The address as Rust's ``Display`` prints it (IPv4-mapped IPv6 in dotted form)."""
    if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
        return f"::ffff:{host.ipv4_mapped}"
    return host.compressed


def _parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise InvalidAddr("port must be a decimal number")
    digits = text.lstrip("0") or "0"
    if len(digits) > 5 or int(digits) > 65535:
        raise InvalidAddr("port must be in 0..65535")
    return int(digits)


@functools.total_ordering
class TransportAddr(abc.ABC):
    """One way to reach an endpoint: ``TransportAddr.Relay``, ``.Ip`` or ``.Custom``."""

    __slots__ = ()

    Relay: ClassVar[type[RelayAddr]]
    Ip: ClassVar[type[IpAddr]]
    Custom: ClassVar[type[CustomAddr]]

    @abc.abstractmethod
    def _sort_key(self) -> tuple[object, ...]:
        """Rust's derived order: variant first, then the variant's fields."""

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, TransportAddr):
            return NotImplemented
        return self._sort_key() < other._sort_key()

    @abc.abstractmethod
    def encode_postcard(self, writer: Writer) -> None:
        """Variant index, then the payload, as iroh's serde does."""

    @staticmethod
    def decode_postcard(reader: Reader) -> TransportAddr:
        variant = reader.variant()
        if variant == _RELAY:
            return RelayAddr(RelayUrl.parse(reader.str_()))
        if variant == _IP:
            return IpAddr.decode_socket_addr(reader)
        if variant == _CUSTOM:
            return CustomAddr(reader.u64(), reader.bytes_())
        raise DecodeError(f"unknown transport address variant {variant}")


@dataclass(frozen=True, init=False, repr=False, slots=True)
class RelayAddr(TransportAddr):
    """Reachable through this relay server."""

    url: RelayUrl

    def __init__(self, url: RelayUrl | str) -> None:
        object.__setattr__(self, "url", url if isinstance(url, RelayUrl) else RelayUrl.parse(url))

    def _sort_key(self) -> tuple[object, ...]:
        return (_RELAY, str(self.url))

    def encode_postcard(self, writer: Writer) -> None:
        writer.variant(_RELAY).str_(str(self.url))

    def __str__(self) -> str:
        return str(self.url)

    def __repr__(self) -> str:
        return f"TransportAddr.Relay({str(self.url)!r})"


@dataclass(frozen=True, init=False, repr=False, slots=True)
class IpAddr(TransportAddr):
    """A UDP socket address. IPv6 scope ids are dropped: iroh's wire format has none."""

    host: IpAddress
    port: int

    def __init__(self, host: IpAddress | str, port: int) -> None:
        if isinstance(host, str):
            try:
                host = ipaddress.ip_address(host)
            except ValueError:
                raise InvalidAddr("not an IPv4 or IPv6 address") from None
        elif not isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise TypeError(f"host must be an IP address or str, not {type(host).__name__}")
        if isinstance(host, ipaddress.IPv6Address) and host.scope_id is not None:
            host = ipaddress.IPv6Address(host.packed)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidAddr(f"port must be an int in 0..65535, got {port!r}")
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)

    @classmethod
    def parse(cls, text: str) -> IpAddr:
        """Parse ``1.2.3.4:5`` or ``[::1]:5`` (a numeric ``%scope`` is accepted and dropped)."""
        if not isinstance(text, str) or not text.isascii():
            raise InvalidAddr("a socket address must be ASCII text like 1.2.3.4:5 or [::1]:5")
        if text.startswith("["):
            inner, sep, port = text[1:].partition("]:")
            if not sep:
                raise InvalidAddr("an IPv6 socket address looks like [::1]:5")
            inner, percent, scope = inner.partition("%")
            if percent and not (scope.isdigit() and len(scope) <= 10 and int(scope) < 1 << 32):
                raise InvalidAddr("an IPv6 scope id must be a number")
            try:
                host: IpAddress = ipaddress.IPv6Address(inner)
            except ValueError:
                raise InvalidAddr("not an IPv6 address") from None
        else:
            address, sep, port = text.rpartition(":")
            if not sep:
                raise InvalidAddr("a socket address needs a port, like 1.2.3.4:5")
            try:
                host = ipaddress.IPv4Address(address)
            except ValueError:
                raise InvalidAddr("not an IPv4 address (IPv6 needs brackets: [::1]:5)") from None
        return cls(host, _parse_port(port))

    @property
    def sockaddr(self) -> tuple[str, int]:
        """``(host, port)`` for the socket module."""
        return (_ip_text(self.host), self.port)

    def _sort_key(self) -> tuple[object, ...]:
        return (_IP, _V4 if self.host.version == 4 else _V6, self.host.packed, self.port)

    def encode_postcard(self, writer: Writer) -> None:
        self.encode_socket_addr(writer.variant(_IP))

    def encode_socket_addr(self, writer: Writer) -> None:
        """Rust's ``SocketAddr`` in postcard: the family variant, the address bytes, the port."""
        packed = self.host.packed
        writer.variant(_V4 if self.host.version == 4 else _V6).fixed(packed, len(packed)).u16(self.port)

    @classmethod
    def decode_socket_addr(cls, reader: Reader) -> IpAddr:
        family = reader.variant()
        if family == _V4:
            return cls(ipaddress.IPv4Address(reader.fixed(4)), reader.u16())
        if family == _V6:
            return cls(ipaddress.IPv6Address(reader.fixed(16)), reader.u16())
        raise DecodeError(f"unknown socket address family variant {family}")

    def __str__(self) -> str:
        if self.host.version == 4:
            return f"{self.host}:{self.port}"
        return f"[{_ip_text(self.host)}]:{self.port}"

    def __repr__(self) -> str:
        return f"TransportAddr.Ip({str(self)!r})"


@dataclass(frozen=True, init=False, repr=False, slots=True)
class CustomAddr(TransportAddr):
    """An address for a user-defined transport: a transport id and opaque data."""

    id: int
    data: bytes

    def __init__(self, id: int, data: bytes | bytearray | memoryview) -> None:
        if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id <= _U64_MAX:
            raise InvalidAddr(f"custom address id must be a u64, got {id!r}")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"custom address data must be bytes, not {type(data).__name__}")
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "data", bytes(data))

    def _sort_key(self) -> tuple[object, ...]:
        if len(self.data) <= _CUSTOM_INLINE_MAX:
            return (_CUSTOM, self.id, 0, len(self.data), self.data)
        return (_CUSTOM, self.id, 1, 0, self.data)

    def encode_postcard(self, writer: Writer) -> None:
        writer.variant(_CUSTOM).u64(self.id).bytes_(self.data)

    def __str__(self) -> str:
        return f"{self.id:x}_{self.data.hex()}"

    def __repr__(self) -> str:
        return f"TransportAddr.Custom({self.id}, {self.data!r})"


TransportAddr.Relay = RelayAddr
TransportAddr.Ip = IpAddr
TransportAddr.Custom = CustomAddr


@dataclass(frozen=True, repr=False)
class EndpointAddr:
    """An EndpointId plus the addresses it may be reached at (possibly none)."""

    id: EndpointId
    addrs: frozenset[TransportAddr] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.id, PublicKey):
            raise TypeError(f"id must be an EndpointId, not {type(self.id).__name__}")
        addrs = frozenset(self.addrs)
        for addr in addrs:
            if not isinstance(addr, TransportAddr):
                raise TypeError(f"addrs must hold TransportAddr values, not {type(addr).__name__}")
        object.__setattr__(self, "addrs", addrs)

    @classmethod
    def from_id(cls, endpoint_id: EndpointId) -> EndpointAddr:
        return cls(endpoint_id)

    def with_addrs(self, addrs: Iterable[TransportAddr]) -> EndpointAddr:
        return EndpointAddr(self.id, self.addrs | frozenset(addrs))

    def with_relay_url(self, url: RelayUrl | str) -> EndpointAddr:
        return self.with_addrs([RelayAddr(url)])

    def with_ip_addr(self, addr: IpAddr | str) -> EndpointAddr:
        return self.with_addrs([addr if isinstance(addr, IpAddr) else IpAddr.parse(addr)])

    def is_empty(self) -> bool:
        """True when only the id is known: dialing then needs address lookup."""
        return not self.addrs

    def sorted_addrs(self) -> list[TransportAddr]:
        """The addresses in iroh's wire order."""
        return sorted(self.addrs)

    def relay_urls(self) -> list[RelayUrl]:
        return [a.url for a in self.sorted_addrs() if isinstance(a, RelayAddr)]

    def ip_addrs(self) -> list[IpAddr]:
        return [a for a in self.sorted_addrs() if isinstance(a, IpAddr)]

    def encode_postcard(self, writer: Writer) -> None:
        writer.fixed(self.id.to_bytes(), KEY_LENGTH)
        writer.seq(self.sorted_addrs(), lambda addr: addr.encode_postcard(writer))

    @classmethod
    def decode_postcard(cls, reader: Reader) -> EndpointAddr:
        """Read an EndpointAddr; like iroh's BTreeSet, any order is accepted and duplicates merge."""
        endpoint_id = PublicKey.from_bytes(reader.fixed(KEY_LENGTH))
        return cls(endpoint_id, frozenset(reader.seq(lambda: TransportAddr.decode_postcard(reader))))

    def encode_addr_info(self, writer: Writer) -> None:
        """iroh's pre-1.0 AddrInfo, still in blob tickets and gossip's PeerData:
        ``{relay_url: Option<RelayUrl>, direct_addresses: BTreeSet<SocketAddr>}``.

        It holds one relay at most and no custom addresses; others are dropped, as iroh does.
        """
        relays = self.relay_urls()
        writer.option(str(relays[0]) if relays else None, writer.str_)
        writer.seq(self.ip_addrs(), lambda ip: ip.encode_socket_addr(writer))

    @classmethod
    def decode_addr_info(cls, endpoint_id: EndpointId, reader: Reader) -> EndpointAddr:
        relay = reader.option(lambda: RelayAddr(RelayUrl.parse(reader.str_())))
        ips: list[TransportAddr] = reader.seq(lambda: IpAddr.decode_socket_addr(reader))
        return cls(endpoint_id, frozenset([relay, *ips] if relay is not None else ips))

    def __repr__(self) -> str:
        addrs = ", ".join(repr(a) for a in self.sorted_addrs())
        return f"EndpointAddr({self.id}, [{addrs}])"
