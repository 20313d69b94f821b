"""Protocols on top of endpoints, dispatched by ALPN through the Router."""

from __future__ import annotations

from irohpy.protocols.router import ProtocolHandler, Router, RouterBuilder

__all__ = ["ProtocolHandler", "Router", "RouterBuilder"]
