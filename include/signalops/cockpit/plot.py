"""The drift timeline as an inline SVG, drawn on the server (no JavaScript, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

SEVERITY_RANK = {"none": 0, "low": 1, "medium": 2, "high": 3}
SEVERITY_COLOR = {"none": "#4c9a2a", "low": "#c9b200", "medium": "#e07b00", "high": "#c62828"}


def drift_svg(checks: Sequence[dict[str, Any]], width: int = 760, height: int = 220) -> str:
    """Severity (dots, left axis) and share of drifted features (line, right axis) per
    checked window, oldest left. ``checks``: rows of ``state_warehouse.read_drift``, oldest
    first."""
    left, right, top, bottom = 70, 50, 20, 40
    inner_w, inner_h = width - left - right, height - top - bottom
    times = [datetime.fromisoformat(str(c["window_end"])).timestamp() for c in checks]
    first, last = (min(times), max(times)) if times else (0.0, 1.0)
    span = (last - first) or 1.0

    def x(t: float) -> float:
        return left + (t - first) / span * inner_w if len(times) > 1 else left + inner_w / 2

    def y(fraction: float) -> float:
        return top + (1 - fraction) * inner_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="drift-plot" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="drift severity and share of drifted features per window">',
        f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
    ]
    for name, rank in SEVERITY_RANK.items():
        yy = y(rank / 3)
        parts.append(
            f'<line x1="{left}" x2="{left + inner_w}" y1="{yy:.1f}" y2="{yy:.1f}" '
            'stroke="#e5e5e5"/>'
            f'<text x="{left - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="{SEVERITY_COLOR[name]}">{name}</text>'
        )
    for share in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{left + inner_w + 6}" y="{y(share) + 4:.1f}" font-size="11" '
            f'fill="#1565c0">{share:.0%}</text>'
        )
    if not checks:
        parts.append(
            f'<text x="{left + inner_w / 2}" y="{top + inner_h / 2}" text-anchor="middle" '
            'font-size="13" fill="#777">no drift checks yet</text>'
        )
    else:
        line = " ".join(
            f"{x(t):.1f},{y(min(1.0, float(c['share_drifted'] or 0))):.1f}"
            for t, c in zip(times, checks, strict=True)
        )
        parts.append(f'<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="1.5"/>')
        for t, check in zip(times, checks, strict=True):
            severity = str(check["severity"])
            features = ", ".join(check.get("drifted_features") or []) or "none"
            title = (
                f"{check['window_end']}: {severity}, {float(check['share_drifted'] or 0):.0%} "
                f"drifted ({features}), model v{check['model_version']}"
            )
            parts.append(
                f'<circle cx="{x(t):.1f}" cy="{y(SEVERITY_RANK.get(severity, 0) / 3):.1f}" '
                f'r="4" fill="{SEVERITY_COLOR.get(severity, "#777")}">'
                f"<title>{escape(title)}</title></circle>"
            )
        for t in sorted({times[0], times[-1]}):
            label = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")
            parts.append(
                f'<text x="{x(t):.1f}" y="{height - 18}" font-size="11" text-anchor="middle" '
                f'fill="#555">{label}</text>'
            )
    parts.append(
        f'<text x="{left}" y="{height - 4}" font-size="11" fill="#555">dots: severity; '
        '<tspan fill="#1565c0">line: share of features drifted</tspan> (window end, UTC)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
