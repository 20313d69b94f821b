"""An iroh relay server (``irohpy relay``): state in memory only, wire-compatible with iroh 1.x.

See ``docs/deploy-a-relay.md``. The server reuses the sans-IO frame codec in
:mod:`irohpy.relay.protocol`; nothing here depends on the endpoint.
"""

from __future__ import annotations

from irohpy.relay.server.access import AccessMode, AccessPolicy
from irohpy.relay.server.config import ServerConfig, load_config
from irohpy.relay.server.server import RelayServer
from irohpy.relay.server.tokens import AccessToken, issue_token, parse_token, verify_token

__all__ = [
    "AccessMode",
    "AccessPolicy",
    "AccessToken",
    "RelayServer",
    "ServerConfig",
    "issue_token",
    "load_config",
    "parse_token",
    "verify_token",
]
