"""Response-rate limiting for DNS over UDP, against reflection and amplification (sans-IO).

A UDP source address can be forged, so an attacker can aim this server's answers (about
ten times the query's size with EDNS) at a victim. As BIND's RRL does, answers to each
source prefix (IPv4 /24, IPv6 /56 by default) are limited to ``responses_per_second``;
past that most queries get nothing, and every ``slip``-th one gets a tiny truncated (TC=1)
reply with no records, which costs no amplification and tells a real resolver behind that
prefix to retry over TCP, where the source address is proven.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message

from irohpy.dns_server.ratelimit import MAX_TRACKED, KeyedBuckets, address_key


@dataclass(frozen=True)
class RrlConfig:
    responses_per_second: float = 20.0
    burst: int = 40
    slip: int = 2
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    max_tracked: int = MAX_TRACKED


class Verdict(enum.Enum):
    ANSWER = "answer"
    SLIP = "slipped"
    DROP = "rate_limited"


class ResponseRateLimiter:
    def __init__(self, config: RrlConfig) -> None:
        if config.slip < 0:
            raise ValueError("slip must be 0 (never) or positive")
        self.config = config
        self._buckets = KeyedBuckets(config.responses_per_second, config.burst, config.max_tracked)
        self._limited = 0

    def check(self, host: str, now: float) -> Verdict:
        """What to do with a query from ``host`` at ``now``."""
        key = address_key(host, self.config.ipv4_prefix, self.config.ipv6_prefix)
        if self._buckets.allow(key, now):
            return Verdict.ANSWER
        self._limited += 1
        slip = self.config.slip
        return Verdict.SLIP if slip and self._limited % slip == 0 else Verdict.DROP


def truncated_reply(wire: bytes) -> bytes | None:
    """A TC=1 reply with the query's id and question and no records; None if it does not parse."""
    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError, TypeError, IndexError, KeyError, struct.error):
        return None
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.TC
    response.use_edns(False)
    return response.to_wire()
