"""The build that runs: the mypyc-compiled engine or plain Python (irohpy._build, setup.py).

``IROHPY_PURE=1`` must load every engine module from its ``.py``; otherwise a compiled build
runs its extensions, and ``irohpy --version`` says which. A source edited after the build must
never be shadowed by its stale extension. The compiled cases need the compiled build (``make``);
on a machine without a C compiler they skip, and the plain-Python cases still run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import irohpy

PACKAGE = Path(irohpy.__file__).resolve().parent
COMPILED_BUILD = (PACKAGE / "_native.json").is_file()
needs_compiled = pytest.mark.skipif(not COMPILED_BUILD, reason="plain-Python build (no C compiler at build time)")

# Prints what `irohpy --version` says and where two engine modules and the driver were loaded from.
PROBE = """
import subprocess, sys
import irohpy._build, irohpy.quic.connection, irohpy.quic.varint, irohpy.endpoint.engine
print(irohpy._build.build())
print(irohpy.quic.connection.__file__)
print(irohpy.quic.varint.__file__)
print(irohpy.endpoint.engine.__file__)
"""


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "IROHPY_PURE"} | (env or {})
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def is_extension(path: str) -> bool:
    return any(path.endswith(suffix) for suffix in EXTENSION_SUFFIXES)


def test_pure_forces_plain_python() -> None:
    assert run("-m", "irohpy", "--version", env={"IROHPY_PURE": "1"}).stdout == f"irohpy {irohpy.__version__} (pure)\n"
    build, *files = run("-c", PROBE, env={"IROHPY_PURE": "1"}).stdout.split()
    assert build == "pure"
    assert all(f.endswith(".py") for f in files), files


@needs_compiled
def test_compiled_build_runs_its_extensions() -> None:
    out = run("-m", "irohpy", "--version")
    assert out.stdout == f"irohpy {irohpy.__version__} (compiled)\n"
    assert out.stderr == ""
    build, *files = run("-c", PROBE).stdout.split()
    assert build == "compiled"
    assert all(is_extension(f) for f in files), files


@needs_compiled
def test_an_edited_source_is_not_shadowed_by_its_stale_extension(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "irohpy", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(tmp_path)}
    build, *files = run("-c", PROBE, env=env, cwd=tmp_path).stdout.split()
    assert (build, files[0]) == ("compiled", str(tmp_path / "irohpy" / "quic" / files[0].rsplit("/", 1)[1]))

    with (tmp_path / "irohpy" / "quic" / "varint.py").open("a") as f:
        f.write("\n# edited after the build\n")
    out = run("-c", PROBE, env=env, cwd=tmp_path)
    build, *files = out.stdout.split()
    assert build == "pure"
    assert files == [
        str(tmp_path / "irohpy" / "quic" / "connection.py"),
        str(tmp_path / "irohpy" / "quic" / "varint.py"),
        str(tmp_path / "irohpy" / "endpoint" / "engine.py"),
    ]
    assert "irohpy.quic.varint changed since the compiled build" in out.stderr
