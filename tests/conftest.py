"""Shared fixtures: isolation checks and the reference peer (official iroh package)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

# No test may probe the machine's real gateway (SSDP multicast, UDP 5351): endpoints in this
# process and in every child it starts keep port mapping off unless a test enables it
# explicitly (the NAT lab does, behind its own routers).
os.environ["IROHPY_PORTMAPPER"] = "disabled"


def loopback_only() -> bool:
    """True when this process's network namespace has no interface but lo."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return False
    return names == ["lo"]


_LOG_LEVEL_SET = False


def _iroh_module():
    global _LOG_LEVEL_SET
    try:
        import iroh  # noqa: PLC0415
    except Exception:  # pragma: no cover - depends on the platform's wheels
        return None
    if not _LOG_LEVEL_SET:
        # The bindings allow one global log dispatcher per process.
        iroh.set_log_level(iroh.LogLevel.WARN)
        _LOG_LEVEL_SET = True
    return iroh


REFPEER_SKIP_REASON: str | None
if _iroh_module() is None:
    REFPEER_SKIP_REASON = "the official iroh package (reference peer) is not importable here"
elif not loopback_only():
    REFPEER_SKIP_REASON = (
        "reference-peer tests run only in a loopback-only network namespace "
        "(run them through `make test` as root, which uses unshare -n)"
    )
else:
    REFPEER_SKIP_REASON = None


NETNS_SKIP_REASON = None if loopback_only() else (
    "needs a loopback-only network namespace of its own (run through `make test` as root, which uses unshare -n)"
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "refpeer" in item.keywords and REFPEER_SKIP_REASON is not None:
            item.add_marker(pytest.mark.skip(reason=REFPEER_SKIP_REASON))
        elif "netns" in item.keywords and NETNS_SKIP_REASON is not None:
            item.add_marker(pytest.mark.skip(reason=NETNS_SKIP_REASON))


@pytest.fixture
def iroh_ref():
    """The official iroh module, for pure (no network) cross-checks."""
    mod = _iroh_module()
    if mod is None:
        pytest.skip("the official iroh package (reference peer) is not importable here")
    return mod


@pytest.fixture
async def iroh_loop(iroh_ref):
    """The official iroh module, registered with the running asyncio loop."""
    if REFPEER_SKIP_REASON is not None:
        pytest.skip(REFPEER_SKIP_REASON)
    iroh_ref.iroh_ffi.uniffi_set_event_loop(asyncio.get_running_loop())
    return iroh_ref


@pytest.fixture
def in_isolated_netns() -> bool:
    return os.environ.get("IROHPY_LOOPBACK_ONLY") == "1" and loopback_only()


@pytest.fixture(autouse=True)
async def no_leaked_tasks():
    """Every task a test starts must be finished or cancelled by its end."""
    before = asyncio.all_tasks()
    yield
    # Let cancellations and close callbacks that are already scheduled run.
    for _ in range(3):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"tasks still running after the test: {leaked}"
