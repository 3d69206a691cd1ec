"""The schedule page's chart, drawn on the server as inline SVG: each run's lateness (its
start minus its due time) and its duration, over time. No script, no external resource."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from schedd.models import Run
from schedd.timing import format_ms

WIDTH, PANEL_H, PAD_L, PAD_R, PAD_T, GAP = 640, 90, 64, 12, 18, 34
COLORS = {"succeeded": "#2f855a", "failed": "#c53030", "cancelled": "#975a16"}


def _fmt_ms(v: float) -> str:
    if v >= 60_000:
        return f"{v / 60_000:.1f} min"
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    return f"{v:.0f} ms"


def _panel(points: Sequence[tuple[int, float, str, str]], top: int, title: str,
           t0: int, t1: int) -> list[str]:
    """One panel: points are (instant ms, value ms, status, run id)."""
    inner_w = WIDTH - PAD_L - PAD_R
    vmax = max((v for _, v, _, _ in points), default=0.0) or 1.0
    out = [
        f'<text x="{PAD_L}" y="{top - 5}" class="ct">{escape(title)}</text>',
        f'<line x1="{PAD_L}" y1="{top + PANEL_H}" x2="{WIDTH - PAD_R}" y2="{top + PANEL_H}"'
        ' class="ax"/>',
        f'<line x1="{PAD_L}" y1="{top}" x2="{PAD_L}" y2="{top + PANEL_H}" class="ax"/>',
        f'<text x="{PAD_L - 6}" y="{top + 8}" class="cl" text-anchor="end">'
        f'{escape(_fmt_ms(vmax))}</text>',
        f'<text x="{PAD_L - 6}" y="{top + PANEL_H}" class="cl" text-anchor="end">0</text>',
    ]
    span = max(1, t1 - t0)
    coords = []
    for t, v, status, run_id in points:
        x = PAD_L + (inner_w * (t - t0) / span if t1 > t0 else inner_w / 2)
        y = top + PANEL_H - PANEL_H * (v / vmax)
        coords.append((x, y, status, run_id, v, t))
    if len(coords) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, *_ in coords)
        out.append(f'<polyline points="{path}" class="ln"/>')
    for x, y, status, run_id, v, t in coords:
        color = COLORS.get(status, "#4a5568")
        out.append(
            f'<a href="/ui/runs/{escape(run_id)}"><circle cx="{x:.1f}" cy="{y:.1f}" r="3.5"'
            f' fill="{color}"><title>{escape(format_ms(t))}: {escape(_fmt_ms(v))}'
            f' ({escape(status)})</title></circle></a>')
    return out


def _label(ms: int) -> str:
    return format_ms(ms)[:19].replace("T", " ") + " UTC"


def runs_chart(runs: Sequence[Run]) -> str:
    """SVG markup for the runs that started, oldest to newest; "" when none did."""
    started = sorted((r for r in runs if r.started_ms is not None),
                     key=lambda r: r.started_ms or 0)
    if not started:
        return ""
    late = [(r.started_ms or 0, float(max(0, (r.started_ms or 0) - r.due_ms)), r.status.value,
             r.id) for r in started]
    dur = [(r.started_ms or 0, float(r.completed_ms - (r.started_ms or 0)), r.status.value, r.id)
           for r in started if r.completed_ms is not None]
    t0, t1 = late[0][0], late[-1][0]
    height = PAD_T + 2 * PANEL_H + GAP + 22
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img"'
        ' aria-label="Lateness and duration of recent runs">',
        *_panel(late, PAD_T, "Lateness (start minus due time)", t0, t1),
        *_panel(dur, PAD_T + PANEL_H + GAP, "Duration", t0, t1),
        f'<text x="{PAD_L}" y="{height - 4}" class="cl">{escape(_label(t0))}</text>',
        f'<text x="{WIDTH - PAD_R}" y="{height - 4}" class="cl" text-anchor="end">'
        f'{escape(_label(t1))}</text>',
        "</svg>",
    ]
    return "\n".join(parts)
