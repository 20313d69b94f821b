"""Relay server URLs, normalised the way iroh's ``RelayUrl`` (the Rust ``url`` crate) does it.

The normalised text is what goes on the wire in tickets and what iroh sorts and compares, so
it has to match byte for byte. We implement the WHATWG URL rules for ``http``/``https`` that
matter for relay URLs and refuse the rare inputs whose normal form we cannot reproduce with
certainty (userinfo, percent-escapes or IDNA in the host, IPv4 shorthands such as ``127.1``,
``^`` in the path), rather than risk a different string than Rust would produce.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
from typing import Final

from irohpy.errors import InvalidRelayUrl

DEFAULT_PORTS: Final = {"http": 80, "https": 443}

_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_TAB_NEWLINE: Final = str.maketrans("", "", "\t\n\r")
_C0_AND_SPACE: Final = "".join(chr(i) for i in range(0x21))
_HOST_CHARS: Final = frozenset(string.ascii_lowercase + string.digits + "-_.")
_HEX_DIGITS: Final = frozenset(string.hexdigits)
# WHATWG percent-encode sets beyond C0 controls, DEL and non-ASCII (which are always encoded).
_PATH_ENCODE: Final = frozenset(' "<>`{}')
_QUERY_ENCODE: Final = frozenset(" \"<>'")
_FRAGMENT_ENCODE: Final = frozenset(' "<>`')
_SINGLE_DOT: Final = frozenset({".", "%2e"})
_DOUBLE_DOT: Final = frozenset({"..", ".%2e", "%2e.", "%2e%2e"})


def _percent_encode(text: str, encode_set: frozenset[str]) -> str:
    out = []
    for c in text:
        if 0x20 < ord(c) < 0x7F and c not in encode_set:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8"))
    return "".join(out)


def _normalize_path(path: str) -> str:
    """Resolve dot segments and percent-encode, as the URL path state does for special schemes."""
    if "^" in path:
        raise InvalidRelayUrl("'^' in a relay URL path is encoded differently across url crate versions")
    segments = path.replace("\\", "/").split("/")[1:] if path else [""]
    out: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment.lower() in _DOUBLE_DOT:
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment.lower() in _SINGLE_DOT:
            if last:
                out.append("")
        else:
            out.append(_percent_encode(segment, _PATH_ENCODE))
    return "/" + "/".join(out)


def _ipv6_host(inner: str) -> str:
    if "%" in inner:
        raise InvalidRelayUrl("IPv6 zone ids are not allowed in URLs")
    try:
        addr = ipaddress.IPv6Address(inner)
    except ValueError:
        raise InvalidRelayUrl("invalid IPv6 address in relay URL host") from None
    if addr.ipv4_mapped is not None:
        # WHATWG prints every IPv6 address in hex pieces, mapped IPv4 included.
        hi, lo = int.from_bytes(addr.packed[12:14], "big"), int.from_bytes(addr.packed[14:], "big")
        return f"[::ffff:{hi:x}:{lo:x}]"
    return f"[{addr.compressed}]"


def _domain_or_ipv4_host(host: str) -> str:
    lower = host.lower()
    if not lower:
        raise InvalidRelayUrl("relay URL has an empty host")
    if any(c not in _HOST_CHARS for c in lower):
        raise InvalidRelayUrl("relay URL host may only contain ASCII letters, digits, '-', '_' and '.'")
    labels = lower.split(".")
    if any(label.startswith("xn--") for label in labels):
        raise InvalidRelayUrl("internationalised (xn--) relay host names are not supported")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    last = labels[-1]
    ends_in_number = last.isdigit() or (last.startswith("0x") and all(c in _HEX_DIGITS for c in last[2:]))
    if not ends_in_number:
        return lower
    if len(labels) == 4 and all(_is_decimal_octet(label) for label in labels):
        return ".".join(labels)
    raise InvalidRelayUrl("relay URL host looks like an IPv4 address but is not a dotted quad")


def _is_decimal_octet(label: str) -> bool:
    return 0 < len(label) <= 3 and label.isdigit() and (label == "0" or label[0] != "0") and int(label) <= 255


def _split_authority(authority: str) -> tuple[str, str | None]:
    """Split ``host[:port]``; a ``:`` inside IPv6 brackets does not start the port."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise InvalidRelayUrl("unterminated IPv6 address in relay URL host")
        rest = authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidRelayUrl("unexpected characters after the IPv6 address in relay URL host")
        return authority[: end + 1], rest[1:] if rest else None
    host, sep, port = authority.partition(":")
    return host, port if sep else None


def _parse_port(text: str | None, scheme: str) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise InvalidRelayUrl("relay URL port is not a number")
    digits = text.lstrip("0") or "0"
    if len(digits) > 5 or int(digits) > 65535:
        raise InvalidRelayUrl("relay URL port is out of range")
    port = int(digits)
    return None if port == DEFAULT_PORTS[scheme] else port


@functools.total_ordering
class RelayUrl:
    """The URL of a relay server, e.g. ``https://use1-1.relay.n0.iroh.link./``.

    Equality, hashing and ordering use the normalised text, like iroh's derived ``Ord`` on
    ``Url`` (which compares serialisations).
    """

    __slots__ = ("_host", "_port", "_scheme", "_text")
    _text: str
    _scheme: str
    _host: str
    _port: int | None

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise InvalidRelayUrl(f"a relay URL must be str, not {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRelayUrl("relay URL is not valid Unicode text") from None
        cleaned = text.strip(_C0_AND_SPACE).translate(_TAB_NEWLINE)
        match = _SCHEME.match(cleaned)
        if match is None:
            raise InvalidRelayUrl("relay URL must be absolute, starting with http:// or https://")
        scheme = match.group(1).lower()
        if scheme not in DEFAULT_PORTS:
            raise InvalidRelayUrl(f"relay URL scheme must be http or https, not {scheme!r}")
        rest = cleaned[match.end() :].lstrip("/\\")
        end = next((i for i, c in enumerate(rest) if c in "/\\?#"), len(rest))
        authority, rest = rest[:end], rest[end:]
        if "@" in authority:
            raise InvalidRelayUrl("relay URLs with credentials (user@host) are not supported")
        host_text, port_text = _split_authority(authority)
        if not host_text:
            raise InvalidRelayUrl("relay URL has an empty host")
        host = _ipv6_host(host_text[1:-1]) if host_text.startswith("[") else _domain_or_ipv4_host(host_text)
        port = _parse_port(port_text, scheme)
        rest, hash_sign, fragment = rest.partition("#")
        path, question, query = rest.partition("?")
        normalized = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
        normalized += _normalize_path(path)
        if question:
            normalized += "?" + _percent_encode(query, _QUERY_ENCODE)
        if hash_sign:
            normalized += "#" + _percent_encode(fragment, _FRAGMENT_ENCODE)
        object.__setattr__(self, "_text", normalized)
        object.__setattr__(self, "_scheme", scheme)
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_port", port)

    @classmethod
    def parse(cls, text: str) -> RelayUrl:
        return cls(text)

    @property
    def scheme(self) -> str:
        return self._scheme

    @property
    def host(self) -> str:
        """The host without IPv6 brackets, ready for DNS, sockets or SNI (trailing dot kept)."""
        return self._host[1:-1] if self._host.startswith("[") else self._host

    @property
    def port(self) -> int:
        """The effective port: the explicit one, or the scheme's default."""
        return self._port if self._port is not None else DEFAULT_PORTS[self._scheme]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("RelayUrl is immutable")

    def __reduce__(self) -> tuple[type[RelayUrl], tuple[str]]:
        return (RelayUrl, (self._text,))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RelayUrl):
            return NotImplemented
        return self._text == other._text

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, RelayUrl):
            return NotImplemented
        return self._text < other._text

    def __hash__(self) -> int:
        return hash((RelayUrl, self._text))

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"RelayUrl({self._text!r})"
