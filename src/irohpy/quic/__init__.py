"""irohpy's own sans-IO QUIC engine."""
