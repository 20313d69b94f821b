"""Reading the TOML config files of irohpy's servers, with one clear error type."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from irohpy.errors import ConfigError


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
