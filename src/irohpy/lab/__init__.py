"""A NAT lab from Linux network namespaces: test hole punching and relay fallback for real.

Linux and root only. ``Lab`` builds two home networks behind NAT routers and a public
segment holding our relay and DNS server; ``irohpy.lab.scenarios`` runs irohpy
endpoints through it. See docs/concepts/nat-traversal.md.
"""

from irohpy.lab.lab import Lab
from irohpy.lab.nat import NatMode
from irohpy.lab.process import LabProcess
from irohpy.lab.topology import HOST_IP, RELAY_IP, Network, Router, unavailable_reason

__all__ = ["HOST_IP", "RELAY_IP", "Lab", "LabProcess", "NatMode", "Network", "Router", "unavailable_reason"]
