"""The distribution: sdist + wheel build, pass ``twine check``, and the wheel works from a fresh venv.

Offline (tests run in a loopback-only namespace): the build uses this venv's setuptools, and the
fresh venv borrows the dependencies from this venv's site-packages through a ``.pth`` file, so
irohpy itself comes only from the wheel. The build here has no working C compiler (``CC=false``):
this checks setup.py's fallback, a plain-Python wheel. ``scripts/check-wheel`` (run by
``.ci/run``) checks the compiled wheel, with the dependencies from the package index.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import irohpy

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    full = {k: v for k, v in os.environ.items() if k != "IROHPY_PURE"} | (env or {})
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=full, timeout=600)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.mark.timeout(900)
def test_wheel_without_a_compiler_is_plain_python_and_runs_the_quickstart(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    log = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT, env={"CC": "false"})
    assert "irohpy build: no working C compiler" in log
    wheel, sdist = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheel) == 1 and len(sdist) == 1
    assert wheel[0].name == f"irohpy-{irohpy.__version__}-py3-none-any.whl"
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", "--strict", wheel[0], sdist[0])
    with tarfile.open(sdist[0]) as tar:
        names = tar.getnames()
    assert f"irohpy-{irohpy.__version__}/setup.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", "_native.json"))]  # no build products
    for license_file in ("LICENSE-MIT", "LICENSE-APACHE"):  # the license texts travel with both
        assert f"irohpy-{irohpy.__version__}/{license_file}" in names
    with zipfile.ZipFile(wheel[0]) as whl:
        licenses = {Path(n).name for n in whl.namelist() if "/licenses/" in n}
    assert licenses == {"LICENSE-MIT", "LICENSE-APACHE"}

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel[0])
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    Path(site, "irohpy-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    assert run(venv / "bin" / "irohpy", "--version").strip() == f"irohpy {irohpy.__version__} (pure)"
    where = run(python, "-c", "import irohpy; print(irohpy.__file__)", cwd=tmp_path)
    assert where.startswith(site), where  # the wheel's copy, not the source tree
    quickstart = re.search(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    assert quickstart is not None
    (tmp_path / "quickstart.py").write_text(quickstart.group(1))
    assert "b'hello iroh' from" in run(python, "quickstart.py", cwd=tmp_path)
