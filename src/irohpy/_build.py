"""Which build runs: the mypyc-compiled QUIC engine, or plain Python.

The build (setup.py) compiles some modules with mypyc and writes ``_native.json`` beside this
file: the compiled modules and a hash of each one's source. Python would load an extension in
preference to the ``.py`` next to it, stale or not, so ``irohpy/__init__`` installs
:class:`SourceFinder` ahead of the normal finders. On the first import of a compiled module it
decides, once, for all of them together (they share one library): compiled when the extensions
are there for this interpreter and every source still hashes as it did at build time; plain
Python when ``IROHPY_PURE=1``, when there are no extensions, or, with a warning, when a source
changed since the build (``make`` rebuilds). ``import irohpy`` itself only checks that the
manifest exists, so commands that never touch the engine start as fast as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "irohpy", "_native.json")
PURE_ENV = "IROHPY_PURE"


def _base(name: str) -> str:
    return os.path.join(ROOT, *name.split("."))


def _read_manifest() -> dict[str, str]:
    import json

    try:
        with open(MANIFEST, encoding="utf-8") as f:
            modules = json.load(f)["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(modules, dict):
        return {}
    return {str(name): str(digest) for name, digest in modules.items() if str(name).startswith("irohpy.")}


def _decide(modules: dict[str, str]) -> bool:
    """Whether the compiled modules may run (see the module docstring)."""
    if os.environ.get(PURE_ENV) == "1" or not modules:
        return False
    if not all(any(os.path.isfile(_base(name) + suffix) for suffix in EXTENSION_SUFFIXES) for name in modules):
        return False
    import hashlib
    import warnings

    stale = []
    for name, digest in modules.items():
        try:
            with open(_base(name) + ".py", "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    stale.append(name)
        except OSError:
            stale.append(name)
    if stale:
        warnings.warn(
            f"irohpy: {', '.join(sorted(stale))} changed since the compiled build; running plain Python"
            " (run `make` to rebuild)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


class SourceFinder:
    """A meta path finder that loads the compiled modules from their ``.py`` when they must not run."""

    def __init__(self) -> None:
        self._modules: dict[str, str] | None = None
        self._compiled: bool | None = None

    @property
    def modules(self) -> dict[str, str]:
        if self._modules is None:
            self._modules = _read_manifest()
        return self._modules

    @property
    def compiled(self) -> bool:
        if self._compiled is None:
            self._compiled = _decide(self.modules)
        return self._compiled

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if not name.startswith("irohpy.") or name not in self.modules or self.compiled:
            return None
        import importlib.util

        return importlib.util.spec_from_file_location(name, _base(name) + ".py")


_finder = SourceFinder()


def install() -> None:
    """Put the finder in place, if this build has compiled modules (``irohpy/__init__`` calls this)."""
    if _finder not in sys.meta_path and os.path.isfile(MANIFEST):
        sys.meta_path.insert(0, _finder)


def build() -> str:
    """``"compiled"`` or ``"pure"``: what the compiled modules run as in this process."""
    return "compiled" if _finder.compiled else "pure"
