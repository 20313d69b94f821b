"""The DNS server's configuration: a TOML file plus command-line overrides.

Every key is listed in ``docs/dns-server.md``; unknown keys are errors so typos do not pass
silently.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.name

from irohpy.base.addr import IpAddr
from irohpy.dns_server.ratelimit import DEFAULT_BURST, DEFAULT_INTERVAL
from irohpy.dns_server.rrl import RrlConfig
from irohpy.base.config_file import read_toml
from irohpy.errors import ConfigError, DecodeError

HTTP_BIND = "[::]:8080"
DNS_BIND = "[::]:53"
METRICS_BIND = "127.0.0.1:9117"
# --dev servers pick a free metrics port, so that several run side by side.
DEV_METRICS_BIND = "127.0.0.1:0"
DEV_HTTP_BIND = "127.0.0.1:8080"
DEV_DNS_BIND = "127.0.0.1:5300"
ORIGIN = "irohdns.example."
MAX_AGE = 7 * 24 * 3600.0
EVICT_INTERVAL = 300.0
NONE = "none"
MAX_FUTURE_SKEW = 300.0
MAX_CONNECTIONS_PER_IP = 64
DEV_DB_PATH = Path(tempfile.gettempdir()) / "irohpy-dns-server-dev.sqlite"


@dataclass(frozen=True)
class RateLimit:
    """``burst`` PUTs at once per client IP, then one every ``interval`` seconds."""

    interval: float = DEFAULT_INTERVAL
    burst: int = DEFAULT_BURST


@dataclass(frozen=True)
class DnsServerConfig:
    db_path: Path
    http_bind: IpAddr
    dns_bind: IpAddr
    metrics_bind: IpAddr | None
    origins: tuple[dns.name.Name, ...]
    max_age: float = MAX_AGE
    evict_interval: float = EVICT_INTERVAL
    rate_limit: RateLimit | None = RateLimit()
    max_future_skew: float = MAX_FUTURE_SKEW
    max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP
    rrl: RrlConfig | None = RrlConfig()


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/irohpy/dns-server.sqlite`` (``~/.local/share`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "irohpy" / "dns-server.sqlite"


def _bind(text: str, what: str) -> IpAddr:
    try:
        return IpAddr.parse(text)
    except DecodeError as exc:
        raise ConfigError(f"{what} must look like 127.0.0.1:8080 or [::]:53: {exc}") from None


def _origin(text: str) -> dns.name.Name:
    try:
        name = dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"origin {text!r} is not a DNS name: {exc}") from None
    if name == dns.name.root:  # "" and "." alike: a zone of ours, never the whole namespace
        raise ConfigError(f"origin {text!r} is the DNS root; name a zone such as irohdns.example.")
    return name


def _take(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.pop(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}{key} has the wrong type")
    return value


def _positive(data: dict[str, Any], key: str, default: float, where: str) -> float:
    if key not in data:
        return default
    value = _take(data, key, (int, float), where)
    if value <= 0:
        raise ConfigError(f"{where}{key} must be positive")
    return float(value)


def _rate_limit(data: dict[str, Any]) -> RateLimit | None:
    if not isinstance(data, dict):
        raise ConfigError("[rate_limit] must be a table")
    data = dict(data)
    mode = _take(data, "mode", str, "rate_limit.") if "mode" in data else "simple"
    if mode not in ("simple", "disabled"):
        raise ConfigError("rate_limit.mode must be 'simple' or 'disabled'")
    interval = _positive(data, "interval_secs", DEFAULT_INTERVAL, "rate_limit.")
    burst = int(_positive(data, "burst", DEFAULT_BURST, "rate_limit."))
    if data:
        raise ConfigError(f"unknown keys in [rate_limit]: {', '.join(sorted(data))}")
    return None if mode == "disabled" else RateLimit(interval, burst)


def _int_in(data: dict[str, Any], key: str, default: int, low: int, high: int, where: str) -> int:
    if key not in data:
        return default
    value = _take(data, key, int, where)
    if not low <= value <= high:
        raise ConfigError(f"{where}{key} must be in {low}..{high}")
    return int(value)


def _rrl(data: dict[str, Any]) -> RrlConfig | None:
    if not isinstance(data, dict):
        raise ConfigError("[rrl] must be a table")
    data = dict(data)
    where = "rrl."
    mode = _take(data, "mode", str, where) if "mode" in data else "enabled"
    if mode not in ("enabled", "disabled"):
        raise ConfigError("rrl.mode must be 'enabled' or 'disabled'")
    d = RrlConfig()
    rate = _positive(data, "responses_per_second", d.responses_per_second, where)
    config = RrlConfig(
        responses_per_second=rate,
        burst=int(_positive(data, "burst", max(d.burst, rate), where)),
        slip=_int_in(data, "slip", d.slip, 0, 10, where),
        ipv4_prefix=_int_in(data, "ipv4_prefix_len", d.ipv4_prefix, 8, 32, where),
        ipv6_prefix=_int_in(data, "ipv6_prefix_len", d.ipv6_prefix, 16, 128, where),
        max_tracked=int(_positive(data, "max_tracked", d.max_tracked, where)),
    )
    if data:
        raise ConfigError(f"unknown keys in [rrl]: {', '.join(sorted(data))}")
    return None if mode == "disabled" else config


def _limits(data: dict[str, Any]) -> int:
    if not isinstance(data, dict):
        raise ConfigError("[limits] must be a table")
    data = dict(data)
    cap = int(_positive(data, "max_connections_per_ip", MAX_CONNECTIONS_PER_IP, "limits."))
    if data:
        raise ConfigError(f"unknown keys in [limits]: {', '.join(sorted(data))}")
    return cap


def load_config(
    path: str | Path | None = None,
    *,
    dev: bool = False,
    http_bind: str | None = None,
    dns_bind: str | None = None,
    metrics_bind: str | None = None,
    origins: list[str] | None = None,
    db_path: str | None = None,
) -> DnsServerConfig:
    """The config file (if any) with command-line values taking precedence.

    ``dev`` binds loopback ports (metrics on a free one), disables the rate limits (PUT and DNS response) and keeps the database in the temporary
    directory unless told otherwise, like iroh-dns-server's ``config.dev.toml``.
    """
    data = dict(read_toml(path)) if path is not None else {}
    where = ""
    file_http = _take(data, "http_bind", str, where) if "http_bind" in data else None
    file_dns = _take(data, "dns_bind", str, where) if "dns_bind" in data else None
    file_metrics = _take(data, "metrics_bind", str, where) if "metrics_bind" in data else None
    file_origins = _take(data, "origins", list, where) if "origins" in data else None
    file_db = _take(data, "db_path", str, where) if "db_path" in data else None
    max_age = _positive(data, "max_age_secs", MAX_AGE, where)
    evict_interval = _positive(data, "evict_interval_secs", EVICT_INTERVAL, where)
    max_future_skew = _positive(data, "max_future_skew_secs", MAX_FUTURE_SKEW, where)
    rate_limit: RateLimit | None = None if dev else RateLimit()
    if "rate_limit" in data:
        rate_limit = _rate_limit(data.pop("rate_limit"))
    rrl: RrlConfig | None = None if dev else RrlConfig()
    if "rrl" in data:
        rrl = _rrl(data.pop("rrl"))
    max_connections_per_ip = _limits(data.pop("limits")) if "limits" in data else MAX_CONNECTIONS_PER_IP
    if data:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(data))}")

    origin_texts = origins or file_origins or [ORIGIN]
    if not all(isinstance(o, str) for o in origin_texts):
        raise ConfigError("origins must be a list of strings")
    metrics_text = metrics_bind or file_metrics or (DEV_METRICS_BIND if dev else METRICS_BIND)
    db = db_path or file_db
    if db is None:
        db = str(DEV_DB_PATH if dev else default_db_path())
    return DnsServerConfig(
        db_path=Path(db),
        http_bind=_bind(http_bind or file_http or (DEV_HTTP_BIND if dev else HTTP_BIND), "http_bind"),
        dns_bind=_bind(dns_bind or file_dns or (DEV_DNS_BIND if dev else DNS_BIND), "dns_bind"),
        metrics_bind=None if metrics_text == NONE else _bind(metrics_text, "metrics_bind"),
        origins=tuple(_origin(o) for o in origin_texts),
        max_age=max_age,
        evict_interval=evict_interval,
        rate_limit=rate_limit,
        max_future_skew=max_future_skew,
        max_connections_per_ip=max_connections_per_ip,
        rrl=rrl,
    )
