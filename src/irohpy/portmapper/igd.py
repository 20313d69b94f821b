"""UPnP IGD v1/v2 documents, sans-IO: the device description and the SOAP actions we use.

Both are XML from the gateway, so parsing is defensive: a size bound, no DOCTYPE
(no entity may be declared, so none can expand), and the stdlib parser, which
never fetches external resources. Control URLs must stay on the description's host.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

from irohpy.errors import PortMapError, PortMapRefused

MAX_DOCUMENT = 64 * 1024
SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CONFLICT = 718
"""ConflictInMappingEntry: the external port is taken."""
ONLY_PERMANENT = 725
"""OnlyPermanentLeasesSupported: IGDv1 devices that accept only lease 0."""


@dataclass(frozen=True)
class Service:
    """A WAN connection service: where to POST actions, and its type (the SOAP namespace)."""

    control_url: str
    service_type: str

    @property
    def version(self) -> int:
        return int(self.service_type.rsplit(":", 1)[1])


def parse_xml(data: bytes) -> ET.Element:
    """Parse a gateway's XML safely (bounded, no DOCTYPE) or raise :class:`PortMapError`."""
    if len(data) > MAX_DOCUMENT:
        raise PortMapError(f"UPnP document of {len(data)} bytes")
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise PortMapError("UPnP document declares a DOCTYPE or entities")
    try:
        return ET.fromstring(data)
    except (ET.ParseError, ValueError) as exc:
        raise PortMapError(f"UPnP document is not XML: {exc}") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(elem: ET.Element, name: str) -> str:
    for child in elem:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def parse_description(data: bytes, location: str) -> Service:
    """The best WAN connection service of a device description fetched from ``location``."""
    root = parse_xml(data)
    base = location
    for elem in root.iter():
        if _local(elem.tag) == "URLBase" and elem.text:
            base = elem.text.strip()
    found: dict[str, str] = {}
    for elem in root.iter():
        if _local(elem.tag) != "service":
            continue
        kind = _text(elem, "serviceType")
        if kind in SERVICES and kind not in found:
            found[kind] = _text(elem, "controlURL")
    for kind in SERVICES:
        if found.get(kind):
            url = urljoin(base, found[kind])
            where, origin = urlsplit(url), urlsplit(location)
            if where.scheme != "http" or (where.hostname, where.port) != (origin.hostname, origin.port):
                raise PortMapError(f"UPnP control URL {url[:80]!r} leaves the gateway {origin.netloc}")
            return Service(url, kind)
    raise PortMapError("UPnP description has no WANIPConnection or WANPPPConnection service")


def soap_request(service: Service, action: str, args: dict[str, str | int]) -> tuple[dict[str, str], bytes]:
    """Headers and body of a SOAP call of ``action`` on ``service``."""
    params = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in args.items())
    body = (f'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="{SOAP_ENV}" '
            f's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            f'<u:{action} xmlns:u="{service.service_type}">{params}</u:{action}></s:Body></s:Envelope>\r\n')
    headers = {"Content-Type": 'text/xml; charset="utf-8"', "SOAPAction": f'"{service.service_type}#{action}"'}
    return headers, body.encode()


def parse_soap(data: bytes, action: str) -> dict[str, str]:
    """The out-arguments of ``action``'s response; a SOAP fault raises :class:`PortMapRefused`."""
    root = parse_xml(data)
    body = next((e for e in root if _local(e.tag) == "Body"), None)
    if _local(root.tag) != "Envelope" or body is None or len(body) == 0:
        raise PortMapError("UPnP answer is not a SOAP envelope")
    reply = body[0]
    if _local(reply.tag) == "Fault":
        code = next((e.text for e in reply.iter() if _local(e.tag) == "errorCode"), None)
        desc = next((e.text for e in reply.iter() if _local(e.tag) == "errorDescription"), "")
        try:
            number = int((code or "").strip())
        except ValueError:
            number = 0
        raise PortMapRefused(f"UPnP {action} failed: {number} {(desc or '').strip()[:80]}", code=number)
    if _local(reply.tag) != f"{action}Response":
        raise PortMapError(f"UPnP answer {_local(reply.tag)[:40]!r} to {action}")
    return {_local(e.tag): (e.text or "").strip() for e in reply}
