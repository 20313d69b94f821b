"""irohpy doctor on loopback: report against our relay (port-mapping codecs: test_portmapper.py),
accept/connect end to end through the CLI, and the plot checked as pixels (HTML rendered by
headless Chromium, and the PNG decoded)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from irohpy.base.relay_url import RelayUrl
from irohpy.doctor import plot
from irohpy.doctor.report import NAT_CONE, NAT_SYMMETRIC, NAT_UDP_BLOCKED, RelayReport, classify, run_report
from irohpy.doctor.speed import Record
from tests.relay_fixture import relay_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run")


def test_nat_type_from_reflexive_addresses() -> None:
    def relay(addr: str | None) -> RelayReport:
        return RelayReport("http://r/", latency_ms=1.0, stun_port=3478, reflexive={"ipv4": addr} if addr else {})
    assert classify([relay("203.0.113.21:4000"), relay("203.0.113.21:4000")], []) == (False, NAT_CONE)
    assert classify([relay("203.0.113.21:4000"), relay("203.0.113.21:5000")], []) == (True, NAT_SYMMETRIC)
    assert classify([relay(None), relay(None)], []) == (None, NAT_UDP_BLOCKED)
    assert classify([relay("198.51.100.2:4000"), relay("198.51.100.2:4000")], ["198.51.100.2"])[1] == "none"


# -- report against our relay ------------------------------------------------------------------


async def test_report_against_a_local_relay() -> None:
    async with relay_server() as relay:
        report = await run_report([RelayUrl.parse(relay.url)], portmap_timeout=0.2)
    [r] = report.relays
    assert r.latency_ms is not None and r.latency_ms > 0 and r.error is None
    assert r.stun_port == relay.port
    assert r.reflexive["ipv4"].startswith("127.0.0.1:")
    assert r.captive_portal is False and report.captive_portal is False
    assert report.udp and report.preferred_relay == r.url
    assert report.portmap["available"] is False  # no gateway in a loopback-only namespace
    json.dumps(report.to_json())


async def test_cli_report_json() -> None:
    async with relay_server() as relay:
        proc = await asyncio.create_subprocess_exec(
            *_irohpy("doctor", "report", "--relay", relay.url, "--json", "--portmap-timeout", "0.2"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    [r] = json.loads(out)["relays"]
    assert r["latency_ms"] > 0 and r["error"] is None
    assert r["qad_port"] is None and r["qad"] == {}  # a plain http relay has no QAD


# -- accept / connect / plot through the CLI ------------------------------------------------------


def _irohpy(*args: str) -> list[str]:
    return [sys.executable, "-m", "irohpy", *args]


async def _connect_run(relay_url: str, tmp_path: Path, size: str = "2M") -> tuple[dict, Path]:  # type: ignore[type-arg]
    accept = await asyncio.create_subprocess_exec(
        *_irohpy("doctor", "accept", "--relay", relay_url, "--ipv6-addr", "none", "--metrics-addr", "127.0.0.1:0"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert accept.stdout is not None and accept.stderr is not None
        line = (await asyncio.wait_for(accept.stderr.readline(), 30)).decode()
        assert line.startswith("metrics on http://127.0.0.1:"), line
        metrics_url = line.split()[-1]
        ticket = (await asyncio.wait_for(accept.stdout.readline(), 30)).decode().strip()
        record = tmp_path / "run.json"
        connect = await asyncio.create_subprocess_exec(
            *_irohpy("doctor", "connect", ticket, "--size", size, "--pings", "5", "--ipv6-addr", "none",
                     "--record", str(record), "--json"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(connect.communicate(), 90)
        assert connect.returncode == 0, err.decode()
        result = json.loads(out)
        async with aiohttp.ClientSession() as http, http.get(metrics_url) as resp:
            scraped = {s.name: s.value for f in text_string_to_metric_families(await resp.text()) for s in f.samples
                       if not s.labels}
        assert scraped["magicsock_num_conns_opened_total"] == 2  # the relay phase's and the direct phase's
        assert scraped["magicsock_recv_data_relay_total"] + scraped["magicsock_recv_data_ipv4_total"] > 4 << 20
        return result, record
    finally:
        accept.terminate()
        await accept.wait()


async def test_accept_connect_relay_then_direct_and_plots(tmp_path: Path) -> None:
    async with relay_server() as relay:
        result, record_path = await _connect_run(relay.url, tmp_path)
    phases = {p["name"]: p for p in result["phases"]}
    assert phases["relay"]["path"] == "relay" and phases["direct"]["path"] == "direct"
    for p in phases.values():
        assert p["bytes"] == 2 << 20 and p["mb_per_s"] > 0
        assert len(p["rtt_ms"]) >= 5 and p["rtt_p50_ms"] <= p["rtt_p99_ms"]
    assert [kind for _, kind, _ in result["path_changes"]][-1] == "direct"
    record = Record.load(record_path)
    assert record.peer == result["peer"]

    png = tmp_path / "chart.png"
    subprocess.run(_irohpy("doctor", "plot", str(record_path), "--out", str(png)), check=True, timeout=60)
    pixels = _decode_png(png.read_bytes())
    assert pixels.shape == (plot.HEIGHT, plot.WIDTH, 3)
    _assert_chart_colors(pixels)

    page = tmp_path / "chart.html"
    subprocess.run(_irohpy("doctor", "plot", str(record_path), "--out", str(page)), check=True, timeout=60)
    text = page.read_text()
    assert "<svg" in text and "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                    "--window-size=1000,900", f"--screenshot={shot}", page.as_uri()],
                   check=True, timeout=60, capture_output=True)
    _assert_chart_colors(_decode_any_png(shot.read_bytes()))


def test_plot_rejects_other_formats_and_bad_records(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    done = subprocess.run(_irohpy("doctor", "plot", str(bad), "--out", str(tmp_path / "x.html")),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stderr.startswith("error: cannot read doctor record")
    assert "Traceback" not in done.stderr


def _assert_chart_colors(pixels: np.ndarray) -> None:
    """Both phases' lines and the path-change markers are drawn, each a visible run of pixels."""
    for color in (*plot.COLORS.values(), plot.CHANGE):
        close = np.all(np.abs(pixels[:, :, :3].astype(int) - np.array(color)) <= 12, axis=2)
        assert close.sum() >= 150, (color, int(close.sum()))
    white = np.all(pixels[:, :, :3] >= 250, axis=2).mean()
    assert 0.5 < white < 0.99


def _decode_png(data: bytes) -> np.ndarray:
    """Our own PNGs: RGB, 8 bit, filter 0 on every row."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack("!II", data[16:24])
    idat = b""
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack("!I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width * 3 + 1)
    assert not raw[:, 0].any()
    return raw[:, 1:].reshape(height, width, 3)


def _decode_any_png(data: bytes) -> np.ndarray:
    """A browser's screenshot PNG (RGB or RGBA, any of the five row filters)."""
    width, height, depth, ctype = struct.unpack("!IIBB", data[16:26])
    assert depth == 8 and ctype in (2, 6)
    channels = 3 if ctype == 2 else 4
    idat, pos = b"", 8
    while pos < len(data):
        (length,) = struct.unpack("!I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        else:
            cur = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                a = cur[x - channels] if x >= channels else 0
                b = prev[x]
                c = prev[x - channels] if x >= channels else 0
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[x] = (line[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels).astype(np.uint8)
