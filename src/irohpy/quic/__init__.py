"""irohpy's own sans-IO QUIC engine (issue 13): wire codecs, packet protection, and the core.

Nothing here does I/O or imports asyncio; drivers feed it datagrams and a clock. See
docs/wire/quic.md for the layout.
"""
