"""SSDP discovery of an Internet Gateway Device (UPnP Device Architecture §1.3), sans-IO.

An M-SEARCH goes to 239.255.255.250:1900 (and to the gateway itself); an answer is
an HTTP-like header block whose LOCATION names the device description. Only
answers whose LOCATION points at the host that answered are accepted, so a
gateway cannot send us to fetch from elsewhere.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from irohpy.errors import PortMapError

PORT = 1900
GROUP = "239.255.255.250"
MAX_ANSWER = 2048
IGD_V1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
IGD_V2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
_ACCEPTED_ST = ("InternetGatewayDevice", "WANIPConnection", "WANPPPConnection", "WANConnectionDevice")


def m_search(st: str = IGD_V1) -> bytes:
    """A search request with MX 1 (answers within a second)."""
    return (f"M-SEARCH * HTTP/1.1\r\nHOST: {GROUP}:{PORT}\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
            f"ST: {st}\r\n\r\n").encode()


def parse_answer(data: bytes, sender: str | None = None) -> str:
    """The description URL of an IGD's search answer, checked to be on ``sender`` if given."""
    if len(data) > MAX_ANSWER:
        raise PortMapError(f"SSDP answer of {len(data)} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise PortMapError("SSDP answer is not ASCII") from None
    lines = text.split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[0] != "HTTP/1.1" or status[1] != "200":
        raise PortMapError(f"SSDP answer status {lines[0][:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        name, sep, value = line.partition(":")
        if not sep:
            raise PortMapError(f"bad SSDP header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    st, location = headers.get("st", ""), headers.get("location", "")
    if not any(kind in st for kind in _ACCEPTED_ST):
        raise PortMapError(f"SSDP answer for {st[:60]!r}, not a gateway")
    url = urlsplit(location)
    if url.scheme != "http" or not url.hostname:
        raise PortMapError("SSDP answer without an http LOCATION")
    try:
        host = ipaddress.ip_address(url.hostname)
        _ = url.port
    except ValueError:
        raise PortMapError(f"SSDP LOCATION {location[:80]!r} is not an IP URL") from None
    if sender is not None and str(host) != sender:
        raise PortMapError(f"SSDP LOCATION {location[:80]!r} is not on the answering host {sender}")
    return location
