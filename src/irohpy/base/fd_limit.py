"""Raising the open-file soft limit to the hard limit, as servers do at start.

Each client holds a socket; the common default soft limit (1024) would turn a few hundred
idle connections into a denial of service long before memory or CPU run out.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def raise_fd_limit() -> int | None:
    """Set RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit (None if unknown)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        logger.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    logger.info("open-file limit raised from %d to %d", soft, hard)
    return hard
