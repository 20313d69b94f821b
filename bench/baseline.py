"""irohpy as it was before its own QUIC engine: the last commit with Endpoint on aioquic.

`make bench` measures it beside today's irohpy in the same run (impl ``irohpy-aioquic``),
so the engine's gain is a ratio from one machine state, not from two reports. Its ``src``
is extracted from git once into bench/results/ and put first on the workers' PYTHONPATH;
the bench code itself is today's and uses only irohpy's public API, which did not change.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

COMMIT = "0989822e596b551b500c69e443bc9b5a353c5458"
"""Merge of engine-switch: the engine complete, Endpoint itself still on aioquic 1.7.2."""
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / "results" / f"baseline-{COMMIT[:12]}"


class BaselineUnavailable(Exception):
    """No git checkout with the baseline commit (an sdist, a shallow clone)."""


def baseline_src() -> Path:
    """The baseline's ``src`` directory, extracted on first use."""
    src = CACHE / "src"
    if (src / "irohpy" / "__init__.py").exists():
        return src
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", COMMIT, "src"],
                                 capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BaselineUnavailable(f"cannot read commit {COMMIT[:12]} from git: {exc}") from None
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE.parent, prefix=".baseline-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        tmp.rename(CACHE)  # atomic: a concurrent run sees all of it or none
    except OSError:
        if not (src / "irohpy" / "__init__.py").exists():  # else a concurrent run won the rename
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return src
