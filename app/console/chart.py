"""A stacked bar chart of decisions per day by outcome, as inline SVG (no JavaScript)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from html import escape

WIDTH, HEIGHT, LEFT, BOTTOM = 720, 220, 40, 30
COLOURS = {"permit": "#1a7f37", "deny": "#b42318"}


def decisions_per_day(counts: Iterable[tuple[str, str, int]], *, last_day: date, days: int) -> str:
    by_day: dict[str, dict[str, int]] = {}
    for day, decision, count in counts:
        by_day.setdefault(day, {})[decision] = count
    span = [(last_day - timedelta(days=offset)).isoformat() for offset in range(days - 1, -1, -1)]
    peak = max((sum(by_day.get(day, {}).values()) for day in span), default=0) or 1
    slot = (WIDTH - LEFT) / len(span)
    plot = HEIGHT - BOTTOM
    parts = [
        f'<svg id="chart" role="img" aria-label="Decisions per day by outcome" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">',
        f'<text x="0" y="12" font-size="11">{peak}</text>',
        f'<line x1="{LEFT}" y1="{plot}" x2="{WIDTH}" y2="{plot}" stroke="#999"/>',
    ]
    for index, day in enumerate(span):
        x, top = LEFT + index * slot, float(plot)
        for decision in ("permit", "deny"):
            count = by_day.get(day, {}).get(decision, 0)
            if not count:
                continue
            height = count / peak * (plot - 10)
            top -= height
            parts.append(
                f'<rect class="bar {decision}" data-day="{day}" data-count="{count}" '
                f'x="{x + 1:.1f}" y="{top:.1f}" width="{max(slot - 2, 1):.1f}" '
                f'height="{height:.1f}" fill="{COLOURS[decision]}">'
                f"<title>{escape(day)}: {count} {decision}</title></rect>"
            )
        if index % max(len(span) // 6, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 10}" font-size="10">{day[5:]}</text>')
    parts.append(
        f'<text x="{WIDTH - 150}" y="12" font-size="11" fill="{COLOURS["permit"]}">permit</text>'
        f'<text x="{WIDTH - 90}" y="12" font-size="11" fill="{COLOURS["deny"]}">deny</text></svg>'
    )
    return "".join(parts)
