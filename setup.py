"""Build irohpy; compile the QUIC engine and its driver with mypyc when a C compiler and mypyc are at hand.

The compiled modules are the ones in ``COMPILED``; their ``.py`` sources ship too, as the
fallback. Next to the extensions the build writes ``irohpy/_native.json``: each compiled
module's source hash, which ``irohpy._build`` checks before letting an extension run (a stale
one never shadows an edited source). Without a working compiler or mypyc, or with
``IROHPY_PURE=1``, the build is plain Python. See docs/build.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
GROUP = "irohpy._native"
MANIFEST = "irohpy/_native.json"
#: The QUIC engine and its asyncio driver down to the UDP socket (docs/build.md).
DRIVER = ("endpoint/engine.py", "endpoint/engine_socket.py", "socket/udp.py")
COMPILED = sorted(
    [path for path in (SRC / "irohpy" / "quic").glob("*.py") if path.name != "__init__.py"]
    + [SRC / "irohpy" / name for name in DRIVER]
)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts)


def source_hashes() -> dict[str, str]:
    return {module_name(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in COMPILED}


#: The hashes of the sources mypyc compiles, taken as it reads them (for the manifest).
compiled_hashes: dict[str, str] = {}


def say(message: str) -> None:
    print(f"irohpy build: {message}", file=sys.stderr)


def compiler_works() -> bool:
    """Whether the C compiler setuptools would use can build a Python extension's object file."""
    # Through setuptools' distutils (setuptools is imported above), as mypyc's build does.
    from distutils import ccompiler, sysconfig
    from distutils.errors import CCompilerError, DistutilsError

    compiler = ccompiler.new_compiler()
    sysconfig.customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp, "probe.c")
        probe.write_text("#include <Python.h>\nint probe(void) { return 0; }\n")
        try:
            compiler.compile([str(probe)], output_dir=tmp, include_dirs=[sysconfig.get_python_inc()])
        except (CCompilerError, DistutilsError, OSError) as exc:
            say(f"no working C compiler ({exc}); building plain Python")
            return False
    return True


# The commands that build extensions. mypycify type-checks and writes the C (half a minute), so
# the others (sdist, egg_info, dist_info: the build backend's metadata steps) skip it.
BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


def extensions() -> list:
    if not BUILDS.intersection(sys.argv[1:]):
        return []
    if os.environ.get("IROHPY_PURE") == "1":
        say("IROHPY_PURE=1; building plain Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        say("mypyc is not installed; building plain Python")
        return []
    if not compiler_works():
        return []
    compiled_hashes.update(source_hashes())
    return mypycify(
        # The rest of irohpy is only read for the types the engine uses, not checked.
        ["--follow-imports=silent", "--ignore-missing-imports", *(str(path) for path in COMPILED)],
        group_name=GROUP,
        target_dir=str(ROOT / "build" / "mypyc"),
    )


class BuildNative(build_ext):
    """build_ext that also writes the source-hash manifest beside the extensions."""

    def run(self) -> None:
        super().run()
        if not self.extensions:
            return
        manifest = json.dumps({"modules": compiled_hashes}, indent=1, sort_keys=True)
        targets = [Path(self.build_lib, MANIFEST)]
        if self.inplace or self.editable_mode:
            targets.append(SRC / MANIFEST)
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(manifest + "\n")

    def get_outputs(self) -> list[str]:
        outputs = super().get_outputs()
        if self.extensions:
            outputs.append(str(Path(self.build_lib, MANIFEST)))
        return outputs


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildNative})
