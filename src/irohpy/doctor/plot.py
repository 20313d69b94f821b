"""``irohpy doctor plot``: a ``connect`` record drawn as RTT and throughput over time, with
path changes marked; as a self-contained HTML page (inline SVG, no external assets) or a PNG.
"""

from __future__ import annotations

import html
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from irohpy.doctor.speed import Record

WIDTH, HEIGHT = 960, 600
LEFT, RIGHT, TOP, GAP, BOTTOM = 70, 20, 40, 60, 50
COLORS = {"relay": (230, 126, 34), "direct": (31, 119, 180)}
CHANGE = (214, 39, 40)
AXIS = (110, 110, 110)
GRID = (225, 225, 225)
RATE_WINDOW = 0.25

Point = tuple[float, float]


@dataclass(frozen=True)
class Panel:
    """One chart area: its pixel box and value ranges."""

    top: float
    height: float
    t_max: float
    y_max: float

    def x(self, t: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (t / self.t_max if self.t_max else 0.0)

    def y(self, v: float) -> float:
        return self.top + self.height * (1 - (v / self.y_max if self.y_max else 0.0))


@dataclass(frozen=True)
class Chart:
    """What both renderings draw: two panels, series per phase, and path-change times."""

    rtt: Panel
    rate: Panel
    rtt_series: dict[str, list[Point]]
    rate_series: dict[str, list[Point]]
    changes: list[tuple[float, str]]


def _rates(record: Record) -> dict[str, list[Point]]:
    """MB/s over windows of at least RATE_WINDOW seconds, at each window's end.

    The first window of a phase is left out: the first writes only fill the flow-control
    window, which says nothing about the path.
    """
    out: dict[str, list[Point]] = {}
    last: dict[str, tuple[float, int]] = {}
    first: set[str] = set()
    for t, done, phase in record.progress:
        prev = last.get(phase)
        if prev is None:
            last[phase] = (t, done)
        elif t - prev[0] >= RATE_WINDOW:
            if phase in first:
                out.setdefault(phase, []).append((t, (done - prev[1]) / (t - prev[0]) / 1e6))
            first.add(phase)
            last[phase] = (t, done)
    return out


def layout(record: Record) -> Chart:
    rtt: dict[str, list[Point]] = {}
    for t, ms, phase in record.rtt:
        rtt.setdefault(phase, []).append((t, ms))
    rates = _rates(record)
    times = [t for t, _, _ in record.rtt] + [t for t, _, _ in record.progress] + [t for t, _, _ in record.path_changes]
    t_max = max(times, default=1.0) or 1.0
    height = (HEIGHT - TOP - GAP - BOTTOM) / 2
    rtt_max = max((v for s in rtt.values() for _, v in s), default=1.0) * 1.1 or 1.0
    rate_max = max((v for s in rates.values() for _, v in s), default=1.0) * 1.1 or 1.0
    changes = [(t, kind) for t, kind, _ in record.path_changes]
    return Chart(Panel(TOP, height, t_max, rtt_max), Panel(TOP + height + GAP, height, t_max, rate_max),
                 rtt, rates, changes)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb


def _svg_panel(panel: Panel, series: dict[str, list[Point]], title: str, unit: str) -> list[str]:
    out = [f'<text x="{LEFT}" y="{panel.top - 8:.0f}" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    for i in range(5):
        v = panel.y_max * i / 4
        y = panel.y(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="{_hex(GRID)}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{v:.3g}</text>')
    out.append(f'<text x="14" y="{panel.top + panel.height / 2:.0f}" font-size="12" '
               f'transform="rotate(-90 14 {panel.top + panel.height / 2:.0f})" text-anchor="middle">{unit}</text>')
    out.append(f'<rect x="{LEFT}" y="{panel.top}" width="{WIDTH - LEFT - RIGHT}" height="{panel.height:.1f}" '
               f'fill="none" stroke="{_hex(AXIS)}"/>')
    for phase, points in series.items():
        color = _hex(COLORS.get(phase, AXIS))
        coords = " ".join(f"{panel.x(t):.1f},{panel.y(v):.1f}" for t, v in points)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="3"/>')
        out += [f'<circle cx="{panel.x(t):.1f}" cy="{panel.y(v):.1f}" r="3" fill="{color}"/>' for t, v in points]
    return out


def to_html(record: Record) -> str:
    """A self-contained page: inline SVG and CSS only."""
    chart = layout(record)
    body = _svg_panel(chart.rtt, chart.rtt_series, "Round-trip time", "ms")
    body += _svg_panel(chart.rate, chart.rate_series, "Throughput", "MB/s")
    bottom = chart.rate.top + chart.rate.height
    for t, kind in chart.changes:
        x = chart.rtt.x(t)
        body.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="{_hex(CHANGE)}" '
                    f'stroke-width="2" stroke-dasharray="6,4"/>')
        body.append(f'<text x="{x + 4:.1f}" y="{TOP + 12}" font-size="11" fill="{_hex(CHANGE)}">→ {kind}</text>')
    for i in range(6):
        t = chart.rtt.t_max * i / 5
        body.append(f'<text x="{chart.rtt.x(t):.1f}" y="{bottom + 18:.0f}" font-size="11" '
                    f'text-anchor="middle">{t:.1f}</text>')
    body.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{bottom + 38:.0f}" font-size="12" '
                f'text-anchor="middle">seconds</text>')
    legend = "".join(f'<span style="color:{_hex(c)}">■ {name}</span> ' for name, c in COLORS.items())
    rows = "".join(
        f"<tr><td>{html.escape(p.name)}</td><td>{html.escape(p.path)}</td>"
        f"<td>{'-' if p.mb_per_s is None else f'{p.mb_per_s:.2f}'}</td>"
        f"<td>{'-' if p.percentile(50) is None else f'{p.percentile(50):.1f}'}</td>"
        f"<td>{p.path_changes}</td><td>{html.escape(p.note)}</td></tr>" for p in record.phases)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>irohpy doctor</title>"
        "<style>body{font-family:sans-serif;margin:16px;background:#fff}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"
        f"<h3>irohpy doctor connect: {html.escape(record.peer[:16])}…</h3><p>{legend}"
        f'<span style="color:{_hex(CHANGE)}">┆ path change</span></p>'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}">{"".join(body)}</svg>'
        "<table><tr><th>phase</th><th>path</th><th>MB/s</th><th>rtt p50 ms</th><th>path changes</th>"
        f"<th>note</th></tr>{rows}</table></body></html>\n"
    )


# -- PNG ------------------------------------------------------------------------------------


def _line(img: np.ndarray, a: Point, b: Point, color: Sequence[int], width: int = 2, dash: int = 0) -> None:
    steps = int(max(abs(b[0] - a[0]), abs(b[1] - a[1]))) + 1
    xs = np.linspace(a[0], b[0], steps)
    ys = np.linspace(a[1], b[1], steps)
    if dash:
        keep = (np.arange(steps) // dash) % 2 == 0
        xs, ys = xs[keep], ys[keep]
    for dx in range(-(width // 2), width - width // 2):
        for dy in range(-(width // 2), width - width // 2):
            px = np.clip(np.round(xs).astype(int) + dx, 0, img.shape[1] - 1)
            py = np.clip(np.round(ys).astype(int) + dy, 0, img.shape[0] - 1)
            img[py, px] = color


def _png_panel(img: np.ndarray, panel: Panel, series: dict[str, list[Point]]) -> None:
    for i in range(5):
        y = panel.y(panel.y_max * i / 4)
        _line(img, (LEFT, y), (WIDTH - RIGHT, y), GRID, 1)
    right, bottom = WIDTH - RIGHT, panel.top + panel.height
    corners: tuple[tuple[Point, Point], ...] = (((LEFT, panel.top), (right, panel.top)), ((LEFT, bottom), (right, bottom)),
                                                 ((LEFT, panel.top), (LEFT, bottom)),
                                                 ((right, panel.top), (right, bottom)))
    for a, b in corners:
        _line(img, a, b, AXIS, 1)
    for phase, points in series.items():
        pixels = [(panel.x(t), panel.y(v)) for t, v in points]
        for a, b in zip(pixels, pixels[1:]):
            _line(img, a, b, COLORS.get(phase, AXIS), 3)
        for p in pixels:
            _line(img, (p[0] - 2, p[1]), (p[0] + 2, p[1]), COLORS.get(phase, AXIS), 5)


def encode_png(img: np.ndarray) -> bytes:
    """An 8-bit RGB PNG (no filtering): zlib and CRCs from the standard library."""
    height, width, _ = img.shape
    raw = np.zeros((height, width * 3 + 1), dtype=np.uint8)
    raw[:, 1:] = img.reshape(height, width * 3)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))

    header = struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + chunk(b"IEND", b""))


def to_png(record: Record) -> bytes:
    """The same chart without text: RTT above, throughput below, dashed red path changes."""
    chart = layout(record)
    img = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    _png_panel(img, chart.rtt, chart.rtt_series)
    _png_panel(img, chart.rate, chart.rate_series)
    for t, _ in chart.changes:
        x = chart.rtt.x(t)
        _line(img, (x, TOP), (x, chart.rate.top + chart.rate.height), CHANGE, 2, dash=6)
    return encode_png(img)
