"""A stacked bar chart of decisions per day by outcome, as inline SVG (no JavaScript), with
a labelled count axis and day axis."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

WIDTH, HEIGHT = 760, 270
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 30, 56  # room for the axes' ticks and titles
COLOURS = {"permit": "#00703c", "deny": "#b42318"}
LEGEND = {"permit": "permitted", "deny": "denied"}
INK = "#0b0c0c"


def decisions_per_day(counts: Iterable[tuple[str, str, int]], *, last_day: date, days: int) -> str:
    by_day: dict[str, dict[str, int]] = {}
    for day, decision, count in counts:
        by_day.setdefault(day, {})[decision] = count
    span = [(last_day - timedelta(days=offset)).isoformat() for offset in range(days - 1, -1, -1)]
    totals = {
        outcome: sum(by_day.get(day, {}).get(outcome, 0) for day in span) for outcome in COLOURS
    }
    peak = max((sum(by_day.get(day, {}).values()) for day in span), default=0) or 1
    slot = (WIDTH - LEFT - RIGHT) / len(span)
    base = HEIGHT - BOTTOM

    def y(count: float) -> float:
        return base - count / peak * (base - TOP)

    summary = f"Decisions per day by outcome, {span[0]} to {span[-1]} (UTC): " + ", ".join(
        f"{total} {outcome}" for outcome, total in totals.items()
    )
    parts = [
        f'<svg id="chart" role="img" aria-label="{summary}" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-size="12" fill="{INK}">',
        f'<text x="14" y="{(TOP + base) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + base) / 2:.0f})">Decisions</text>',
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">'
        "Day (UTC)</text>",
    ]
    for tick in sorted({0, peak // 2, peak}):
        parts.append(
            f'<line x1="{LEFT}" y1="{y(tick):.1f}" x2="{WIDTH - RIGHT}" y2="{y(tick):.1f}" '
            f'stroke="{"#6f777b" if tick == 0 else "#dddddd"}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
            f"{tick}</text>"
        )
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#6f777b"/>')
    for index, day in enumerate(span):
        x, top = LEFT + index * slot, float(base)
        for decision, colour in COLOURS.items():
            count = by_day.get(day, {}).get(decision, 0)
            if not count:
                continue
            height = base - y(count)
            top -= height
            parts.append(
                f'<rect class="bar {decision}" data-day="{day}" data-count="{count}" '
                f'x="{x + 1:.1f}" y="{top:.1f}" width="{max(slot - 2, 1):.1f}" '
                f'height="{height:.1f}" fill="{colour}">'
                f"<title>{day}: {count} {decision}</title></rect>"
            )
        if index % max(len(span) // 6, 1) == 0 or index == len(span) - 1:
            middle = x + slot / 2
            parts.append(
                f'<line x1="{middle:.1f}" y1="{base}" x2="{middle:.1f}" y2="{base + 4}" '
                f'stroke="#6f777b"/><text class="tick" x="{middle:.1f}" y="{base + 18}" '
                f'text-anchor="middle">{_short(day)}</text>'
            )
    for offset, (decision, colour) in enumerate(COLOURS.items()):
        x = WIDTH - RIGHT - 170 + offset * 90
        parts.append(
            f'<rect x="{x}" y="8" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 16}" y="18">{LEGEND[decision]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(day: str) -> str:
    """`2026-12-06` as `6 Dec`."""
    moment = date.fromisoformat(day)
    return f"{moment.day} {moment:%b}"
