"""Which relays an endpoint may use, in iroh's terms (RelayMode, RelayMap)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from irohpy.base.relay_url import RelayUrl
from irohpy.relay import defaults


@dataclass(frozen=True)
class RelayConfig:
    """One relay server: its URL, its QUIC address-discovery port (iroh's default 7842; None:
    no QAD), optional token."""

    url: RelayUrl
    quic_port: int | None = defaults.QAD_PORT
    auth_token: str | None = field(default=None, repr=False)


class RelayMap:
    """An ordered set of relays, keyed by URL."""

    def __init__(self, relays: Iterable[RelayConfig | RelayUrl | str] = ()) -> None:
        self._relays: dict[RelayUrl, RelayConfig] = {}
        for relay in relays:
            self.insert(relay)

    @classmethod
    def from_urls(cls, urls: Iterable[RelayUrl | str]) -> RelayMap:
        return cls(urls)

    def insert(self, relay: RelayConfig | RelayUrl | str) -> None:
        if isinstance(relay, str):
            relay = RelayUrl.parse(relay)
        if isinstance(relay, RelayUrl):
            relay = RelayConfig(relay)
        self._relays[relay.url] = relay

    def remove(self, url: RelayUrl | str) -> RelayConfig | None:
        key = RelayUrl.parse(url) if isinstance(url, str) else url
        return self._relays.pop(key, None)

    def get(self, url: RelayUrl) -> RelayConfig | None:
        return self._relays.get(url)

    def urls(self) -> list[RelayUrl]:
        return list(self._relays)

    def __iter__(self) -> Iterator[RelayConfig]:
        return iter(self._relays.values())

    def __len__(self) -> int:
        return len(self._relays)

    def __bool__(self) -> bool:
        return bool(self._relays)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RelayMap) and list(self._relays.values()) == list(other._relays.values())

    def __repr__(self) -> str:
        return f"RelayMap({[str(u) for u in self._relays]})"


class RelayKind(enum.Enum):
    DISABLED = "disabled"
    DEFAULT = "default"
    STAGING = "staging"
    CUSTOM = "custom"


@dataclass(frozen=True, eq=False)
class RelayMode:
    """Disabled, number 0's default or staging relays, or a custom map."""

    kind: RelayKind
    relay_map: RelayMap = field(default_factory=RelayMap)

    @classmethod
    def disabled(cls) -> RelayMode:
        return cls(RelayKind.DISABLED)

    @classmethod
    def default(cls) -> RelayMode:
        return cls(RelayKind.DEFAULT, RelayMap(defaults.PROD_RELAYS))

    @classmethod
    def staging(cls) -> RelayMode:
        return cls(RelayKind.STAGING, RelayMap(defaults.STAGING_RELAYS))

    @classmethod
    def custom(cls, relays: RelayMap | Iterable[RelayConfig | RelayUrl | str]) -> RelayMode:
        relay_map = relays if isinstance(relays, RelayMap) else RelayMap(relays)
        return cls(RelayKind.CUSTOM, relay_map)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RelayMode) and (self.kind, self.relay_map) == (other.kind, other.relay_map)

    def __hash__(self) -> int:
        return hash(self.kind)


RelayMode.DISABLED = RelayMode.disabled()  # type: ignore[attr-defined]
