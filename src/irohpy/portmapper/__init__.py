"""Port mapping: ask the home router to forward a public UDP port to our socket.

PCP (RFC 6887), NAT-PMP (RFC 6886) and UPnP IGD v1/v2, as iroh's portmapper does.
The mapped address becomes one of the endpoint's direct addresses, so a peer can
reach us even behind a NAT whose own mappings are unpredictable (symmetric).
See docs/concepts/port-mapping.md.
"""

from irohpy.portmapper.config import PortmapperConfig
from irohpy.portmapper.mapping import Mapping, Probe, Protocol
from irohpy.portmapper.service import Portmapper

__all__ = ["Mapping", "Portmapper", "PortmapperConfig", "Probe", "Protocol"]
