"""An iroh DNS server: a pkarr relay over HTTP plus DNS over UDP and TCP, sharing one store."""

from irohpy.dns_server.config import DnsServerConfig, load_config
from irohpy.dns_server.server import DnsServer

__all__ = ["DnsServer", "DnsServerConfig", "load_config"]
