"""``irohpy demo`` (what ``make demo`` runs): relay and DNS server processes, dial by key, relay then direct."""

from __future__ import annotations

import subprocess
import sys


def test_demo_dials_by_key_and_goes_direct() -> None:
    out = subprocess.run([sys.executable, "-m", "irohpy", "demo", "--megabytes", "2"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "relay-only mode" in text and "hole-punch to direct" in text
    assert text.count("dialed by             EndpointId only") == 2
    first, second = text.split("2. default mode")
    assert "path at the end       relay:" in first
    assert "went direct after" in second and "path at the end       direct UDP:" in second
