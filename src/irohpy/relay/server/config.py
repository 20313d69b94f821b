"""The relay server's configuration: a TOML file (stdlib tomllib) plus command-line overrides.

Key names follow iroh-relay's config file where the concept is the same (``http_bind_addr``,
``metrics_bind_addr``, ``[limits.client.rx]``); every key is listed in
``docs/deploy-a-relay.md``. Unknown keys are errors: a misspelt access rule must not
silently leave a relay open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from irohpy.base.addr import IpAddr
from irohpy.base.keys import PublicKey
from irohpy.base.config_file import read_toml
from irohpy.errors import ConfigError, DecodeError
from irohpy.relay.protocol import MAX_PACKET_SIZE, MIN_SEGMENT_SIZE
from irohpy.relay.server.access import AccessMode, AccessPolicy
from irohpy.relay.server.tokens import TOKEN_ID_LENGTH

DEV_HTTP_BIND = "[::]:3340"
HTTP_BIND = "[::]:80"
HTTPS_BIND = "[::]:443"
QUIC_PORT = 7842
METRICS_BIND = "127.0.0.1:9090"
# --dev relays pick a free metrics port, so that several run side by side.
DEV_METRICS_BIND = "127.0.0.1:0"
NONE = "none"

T = TypeVar("T")
_KINDS: dict[type, str] = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                           list: "a list", dict: "a table"}




@dataclass(frozen=True)
class RateLimit:
    """A client's receive budget; every frame costs its wire size, at least ``min_frame_bytes``
    per frame and per datagram in a batch (so tiny frames cannot multiply the work per byte)."""

    bytes_per_second: int
    max_burst_bytes: int
    min_frame_bytes: int = 256


@dataclass(frozen=True)
class Limits:
    send_queue_packets: int = 512
    send_queue_bytes: int = 2 << 20
    write_timeout: float = 2.0
    accept_timeout: float = 30.0
    client_rx: RateLimit | None = None
    max_connections_per_ip: int = 128
    min_segment_size: int = MIN_SEGMENT_SIZE
    qad_max_connections: int = 8192
    qad_max_connections_per_ip: int = 8


@dataclass(frozen=True)
class Timers:
    ping_interval: float = 15.0
    ping_jitter: tuple[float, float] = (1.0, 5.0)
    pong_timeout: tuple[float, float] = (0.5, 5.0)


@dataclass(frozen=True)
class Shutdown:
    """What ``Restarting`` tells clients on a graceful shutdown."""

    reconnect_in_ms: int = 1000
    try_for_ms: int = 30_000


@dataclass(frozen=True)
class Tls:
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; ``http_bind`` None means no plain-HTTP listener."""

    dev: bool = False
    http_bind: IpAddr | None = field(default_factory=lambda: IpAddr.parse(DEV_HTTP_BIND))
    https_bind: IpAddr = field(default_factory=lambda: IpAddr.parse(HTTPS_BIND))
    tls: Tls | None = None
    metrics_bind: IpAddr | None = field(default_factory=lambda: IpAddr.parse(METRICS_BIND))
    access: AccessPolicy = field(default_factory=AccessPolicy)
    limits: Limits = field(default_factory=Limits)
    timers: Timers = field(default_factory=Timers)
    shutdown: Shutdown = field(default_factory=Shutdown)
    # STUN binding on UDP at the relay listener's address: this port, 0 for
    # the listener's own port number, None for none.
    stun_port: int | None = 0
    # QUIC address discovery on UDP at this address (iroh-relay's quic_bind_addr, enabled by
    # enable_quic_addr_discovery); None: off.
    quic_bind: IpAddr | None = None

    def __post_init__(self) -> None:
        if self.dev and self.http_bind is None:
            raise ConfigError("--dev serves plain HTTP and needs an HTTP bind address")
        if not self.dev and self.tls is None:
            raise ConfigError("no TLS certificate: pass --tls-cert and --tls-key, or --dev for plain HTTP")
        if self.quic_bind is not None and self.tls is None:
            raise ConfigError("QUIC address discovery needs TLS (--tls-cert and --tls-key, not --dev)")


class _Table:
    """One TOML table, read key by key with type checks; leftovers are unknown keys."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self._data = dict(data)
        self._where = where

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def take(self, key: str, kind: type[T], default: T) -> T:
        if key not in self._data:
            return default
        value = self._data.pop(key)
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"{self._name(key)} must be {_KINDS[kind]}, not {value!r}")
        return value

    def positive(self, key: str, kind: type[T], default: T) -> T:
        value = self.take(key, kind, default)
        if value <= 0:  # type: ignore[operator]
            raise ConfigError(f"{self._name(key)} must be positive")
        return value

    def strings(self, key: str) -> list[str]:
        values = self.take(key, list, [])
        if not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{self._name(key)} must be a list of strings")
        return values

    def span(self, key: str, default: tuple[float, float]) -> tuple[float, float]:
        """A ``[low, high]`` pair of non-negative seconds."""
        value = self.take(key, list, list(default))
        if (len(value) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
                or not 0 <= value[0] <= value[1]):
            raise ConfigError(f"{self._name(key)} must be [low, high] with 0 <= low <= high")
        return (float(value[0]), float(value[1]))

    def has(self, key: str) -> bool:
        return key in self._data

    def table(self, key: str) -> _Table:
        return _Table(self.take(key, dict, {}), self._name(key))

    def done(self) -> None:
        if self._data:
            raise ConfigError(f"unknown config key {self._name(next(iter(self._data)))}")


def _bind(text: str, what: str) -> IpAddr | None:
    if text == NONE:
        return None
    try:
        return IpAddr.parse(text)
    except DecodeError as exc:
        raise ConfigError(f"{what} {text!r}: {exc} (use an IP literal, e.g. [::]:3340)") from None


def _stun_port(text: str) -> int | None:
    if text == NONE:
        return None
    if not text.isdigit() or int(text) > 65535:
        raise ConfigError(f"stun port {text!r}: expected 0-65535 (0: the relay's port) or {NONE!r}")
    return int(text)


def _required_bind(text: str, what: str) -> IpAddr:
    addr = _bind(text, what)
    if addr is None:
        raise ConfigError(f"the {what} cannot be {NONE!r}")
    return addr


def _keys(values: list[str], what: str) -> frozenset[PublicKey]:
    try:
        return frozenset(PublicKey.parse(v) for v in values)
    except DecodeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _token_ids(values: list[str]) -> frozenset[bytes]:
    out = set()
    for value in values:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) != TOKEN_ID_LENGTH:
            raise ConfigError(f"access.revoked_tokens: {value!r} is not a {2 * TOKEN_ID_LENGTH}-digit hex token id")
        out.add(raw)
    return frozenset(out)


def _access(t: _Table) -> AccessPolicy:
    mode_text = t.take("mode", str, AccessMode.EVERYONE.value)
    try:
        mode = AccessMode(mode_text)
    except ValueError:
        modes = ", ".join(m.value for m in AccessMode)
        raise ConfigError(f"access.mode must be one of {modes}, not {mode_text!r}") from None
    policy = AccessPolicy(
        mode=mode,
        allowlist=_keys(t.strings("allowlist"), "access.allowlist"),
        denylist=_keys(t.strings("denylist"), "access.denylist"),
        trusted_issuers=_keys(t.strings("trusted_issuers"), "access.trusted_issuers"),
        revoked_tokens=_token_ids(t.strings("revoked_tokens")),
    )
    t.done()
    return policy


def _limits(t: _Table) -> Limits:
    d = Limits()
    client = t.table("client")
    rx_table = client.table("rx")
    rx = None
    if rx_table.has("bytes_per_second"):
        rate = rx_table.positive("bytes_per_second", int, 1)
        rx = RateLimit(rate, rx_table.positive("max_burst_bytes", int, max(1, rate // 10)),
                       rx_table.positive("min_frame_bytes", int, RateLimit.min_frame_bytes))
    rx_table.done()
    client.done()
    limits = Limits(
        send_queue_packets=t.positive("send_queue_packets", int, d.send_queue_packets),
        send_queue_bytes=t.positive("send_queue_bytes", int, d.send_queue_bytes),
        write_timeout=t.positive("write_timeout_secs", float, d.write_timeout),
        accept_timeout=t.positive("accept_timeout_secs", float, d.accept_timeout),
        client_rx=rx,
        max_connections_per_ip=t.positive("max_connections_per_ip", int, d.max_connections_per_ip),
        min_segment_size=t.positive("min_segment_size", int, d.min_segment_size),
        qad_max_connections=t.positive("qad_max_connections", int, d.qad_max_connections),
        qad_max_connections_per_ip=t.positive("qad_max_connections_per_ip", int, d.qad_max_connections_per_ip),
    )
    if limits.min_segment_size > 0xFFFF:
        raise ConfigError("limits.min_segment_size must be at most 65535")
    if limits.send_queue_bytes < 2 * MAX_PACKET_SIZE:
        raise ConfigError(f"limits.send_queue_bytes must hold at least two full frames ({2 * MAX_PACKET_SIZE})")
    t.done()
    return limits


def _timers(t: _Table) -> Timers:
    d = Timers()
    timers = Timers(
        ping_interval=t.positive("ping_interval_secs", float, d.ping_interval),
        ping_jitter=t.span("ping_jitter_secs", d.ping_jitter),
        pong_timeout=t.span("pong_timeout_secs", d.pong_timeout),
    )
    if timers.pong_timeout[0] <= 0:
        raise ConfigError("timers.pong_timeout_secs must be above zero")
    t.done()
    return timers


def _shutdown(t: _Table) -> Shutdown:
    d = Shutdown()
    out = Shutdown(t.take("reconnect_in_ms", int, d.reconnect_in_ms), t.take("try_for_ms", int, d.try_for_ms))
    if not (0 <= out.reconnect_in_ms < 1 << 32 and 0 <= out.try_for_ms < 1 << 32):
        raise ConfigError("shutdown.reconnect_in_ms and try_for_ms must fit in a u32")
    t.done()
    return out


def load_config(
    path: str | Path | None = None,
    *,
    dev: bool = False,
    http_bind: str | None = None,
    https_bind: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    metrics_bind: str | None = None,
    stun_port: str | None = None,
    enable_quic_addr_discovery: bool = False,
    quic_bind: str | None = None,
) -> ServerConfig:
    """The config file (if any) with command-line values taking precedence.

    ``--dev`` serves plain HTTP only and ignores TLS settings, as ``iroh-relay --dev`` does.
    Relative certificate paths in the file are relative to the file.
    """
    root = _Table(read_toml(path) if path is not None else {}, "")
    base = Path(path).parent if path is not None else Path()
    tls_table = root.table("tls")
    file_cert = tls_table.take("cert_path", str, "")
    file_key = tls_table.take("key_path", str, "")
    file_https = tls_table.take("https_bind_addr", str, HTTPS_BIND)
    file_quic = tls_table.take("quic_bind_addr", str, "")
    tls_table.done()
    cert = tls_cert or (str(base / file_cert) if file_cert else None)
    key = tls_key or (str(base / file_key) if file_key else None)
    if (cert is None) != (key is None):
        raise ConfigError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
    file_http = root.take("http_bind_addr", str, DEV_HTTP_BIND if dev else HTTP_BIND)
    enable_metrics = root.take("enable_metrics", bool, True)
    file_metrics = root.take("metrics_bind_addr", str, DEV_METRICS_BIND if dev else METRICS_BIND)
    file_stun = root.take("stun_port", str, "0")
    https = _required_bind(https_bind or file_https, "https bind address")
    qad = root.take("enable_quic_addr_discovery", bool, False) or enable_quic_addr_discovery
    quic_text = quic_bind or file_quic
    quic = None
    if qad:
        quic = _required_bind(quic_text, "quic bind address") if quic_text else IpAddr(https.host, QUIC_PORT)
    config = ServerConfig(
        dev=dev,
        http_bind=_bind(http_bind or file_http, "http bind address"),
        https_bind=https,
        tls=None if dev or cert is None or key is None else Tls(Path(cert), Path(key)),
        metrics_bind=_bind(metrics_bind or (file_metrics if enable_metrics else NONE), "metrics bind address"),
        access=_access(root.table("access")),
        limits=_limits(root.table("limits")),
        timers=_timers(root.table("timers")),
        shutdown=_shutdown(root.table("shutdown")),
        stun_port=_stun_port(stun_port or file_stun),
        quic_bind=quic,
    )
    root.done()
    return config
