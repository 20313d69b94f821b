"""Whether an endpoint asks its router for a port mapping (iroh's ``PortmapperConfig``).

Enabled by default, as in iroh. ``IROHPY_PORTMAPPER=disabled`` in the environment
turns the default off for every endpoint of the process and of its children (the
test suite sets it so no test ever probes the machine's real gateway); an explicit
``PortmapperConfig.ENABLED`` still enables it.
"""

from __future__ import annotations

import enum
import os

ENV = "IROHPY_PORTMAPPER"


class PortmapperConfig(enum.Enum):
    ENABLED = "enabled"
    """Probe the default gateway for PCP, NAT-PMP and UPnP IGD and keep a mapping of our UDP port."""
    DISABLED = "disabled"
    """No gateway probing (no SSDP multicast, nothing to UDP 5351)."""

    @classmethod
    def default(cls) -> PortmapperConfig:
        return cls.DISABLED if os.environ.get(ENV, "").strip().lower() in ("disabled", "off", "0", "no") \
            else cls.ENABLED
