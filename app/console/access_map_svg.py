"""The access map as inline SVG (no JavaScript): the agencies that hold data in a column on
the left, those that may see it on the right, and one arrow per flow from holder to
requester. An arrow's strands are coloured by the data classes its grants cover (dashed: a
class only its break-glass block covers); its label names the agreement and whose data."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from app.console.views import Names
from app.policy.access_map import Flow
from app.policy.vocabulary import FIELD_CLASSES, FieldClass

WIDTH = 1200
NODE_WIDTH = 270
COLUMNS = {"holder": 8, "requester": WIDTH - 8 - NODE_WIDTH}  # each column's left edge
TOP = 92  # below the legend and the column titles
NODE_GAP = 18
END_GAP = 32  # between two arrow ends on one node: a strand bundle and its label
NAME_LINE = 17
NAME_WIDTH = 31  # characters of a display name on one line of a node
STRAND_GAP = 4.5
HEAD = 12  # the arrowhead's length
CHARACTER = 6.5  # the width of a label's character, about
BEND = 200  # the least room an arrow has to bend from its holder's level to its requester's
INK, MUTED, NODE_FILL, CHOSEN_FILL = "#0b0c0c", "#484949", "#f3f2f1", "#fff2a8"
COLOURS: dict[FieldClass, str] = {
    "personal": "#0072b2",
    "special-category": "#d55e00",
    "criminal-offence": "#7b2d8e",
}
CLASS_NAMES: dict[FieldClass, str] = {
    "personal": "personal",
    "special-category": "special category",
    "criminal-offence": "criminal offence",
}


@dataclass(frozen=True)
class _Node:
    agency: str
    role: str  # "holder" or "requester"
    y: float
    height: float
    lines: tuple[str, ...]

    @property
    def x(self) -> int:
        return COLUMNS[self.role]

    @property
    def middle(self) -> float:
        return self.y + self.height / 2


def _terms_in_words(flow: Flow) -> str:
    """A flow's conditions in words: whose data, consent, break-glass."""
    parts = list(flow.subjects)
    if flow.requires_consent:
        parts.append("with consent")
    if flow.break_glass:
        parts.append("break-glass" if flow.grants else "break-glass only")
    return " · ".join(parts)


def _described(flow: Flow, names: Names) -> str:
    """A flow in a sentence, for its `<title>` (a tooltip)."""

    def listed(kinds: Sequence[FieldClass]) -> str:
        return ", ".join(CLASS_NAMES[kind] for kind in kinds)

    text = (
        f"{names.agency(flow.holder)} to {names.agency(flow.requester)} under "
        f"{flow.agreement_id} v{flow.agreement_version} ({flow.agreement_title})"
    )
    if flow.grants:
        text += f": {listed(flow.classes)} data of {'; '.join(flow.subjects)} for " + ", ".join(
            names.purpose(purpose) for purpose in flow.purposes
        )
    if flow.requires_consent:
        text += ", with the person's consent"
    if flow.break_glass:
        text += f"; in an emergency only, {listed(flow.break_glass.classes)} data"
    return text


def _nodes(role: str, flows: Sequence[Flow], names: Names) -> list[_Node]:
    ends: dict[str, int] = {}
    for flow in flows:
        agency = flow.holder if role == "holder" else flow.requester
        ends[agency] = ends.get(agency, 0) + 1
    nodes, y = [], float(TOP)
    for agency in sorted(ends, key=lambda name: (names.agency(name), name)):
        lines = tuple(textwrap.wrap(names.agency(agency), NAME_WIDTH)) or (agency,)
        height = max(14 + NAME_LINE * len(lines) + 16, END_GAP * (ends[agency] + 1))
        nodes.append(_Node(agency, role, y, height, lines))
        y += height + NODE_GAP
    return nodes


def _centred(nodes: list[_Node], height: float) -> list[_Node]:
    """The column moved down to the middle of the tallest one."""
    own = nodes[-1].y + nodes[-1].height - TOP
    shift = (height - own) / 2
    return [_Node(n.agency, n.role, n.y + shift, n.height, n.lines) for n in nodes]


def _curve(x1: float, y1: float, x2: float, y2: float, run: float) -> str:
    """Level for `run` from the holder (the label's room), then a bend to the requester."""
    level = x1 + run
    middle = (level + x2) / 2
    return (
        f"M{x1:.1f},{y1:.1f} H{level:.1f} "
        f"C{middle:.1f},{y1:.1f} {middle:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    )


def access_map_svg(flows: Sequence[Flow], names: Names, *, chosen: str | None = None) -> str:
    """The picture of `flows`; `chosen`, the agency filtered on, stands out."""
    holders, requesters = _nodes("holder", flows, names), _nodes("requester", flows, names)
    tallest = max(column[-1].y + column[-1].height - TOP for column in (holders, requesters))
    holders, requesters = _centred(holders, tallest), _centred(requesters, tallest)
    node = {(n.role, n.agency): n for n in (*holders, *requesters)}
    height = TOP + tallest + 12

    # Each node's arrow ends spread down its side, ordered by where the other end is.
    end_y: dict[tuple[str, str], float] = {}
    for n in (*holders, *requesters):
        other = "requester" if n.role == "holder" else "holder"
        touching = [flow for flow in flows if getattr(flow, n.role) == n.agency]
        touching.sort(key=lambda f: (node[other, getattr(f, other)].middle, f.agreement_id))
        for index, flow in enumerate(touching):
            end_y[flow.key, n.role] = n.y + n.height * (index + 1) / (len(touching) + 1)

    agencies = {n.agency for n in (*holders, *requesters)}
    summary = (
        f"Access map: {len(flows)} flow{'s' if len(flows) != 1 else ''} between "
        f"{len(agencies)} agencies, from the agencies holding the data (left) to those that "
        "may see it (right). The table below lists every flow."
    )
    parts = [
        f'<svg id="access-map" role="img" aria-labelledby="access-map-title" width="{WIDTH}" '
        f'height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" font-size="13" fill="{INK}">',
        f'<title id="access-map-title">{escape(summary)}</title>',
        '<defs><marker id="arrowhead" viewBox="0 0 10 10" refX="10" refY="5" '
        f'markerWidth="{HEAD}" markerHeight="{HEAD + 4}" markerUnits="userSpaceOnUse" '
        f'orient="auto" preserveAspectRatio="none"><path d="M0,0 L10,5 L0,10 z" fill="{INK}"/>'
        "</marker></defs>",
    ]
    parts += _legend()
    for role, title in (("holder", "Holds the data"), ("requester", "May see it")):
        parts.append(
            f'<text x="{COLUMNS[role]}" y="{TOP - 14}" font-size="15" font-weight="700">'
            f"{title}</text>"
        )

    x1, x2 = COLUMNS["holder"] + NODE_WIDTH, COLUMNS["requester"]
    terms = {flow.key: _terms_in_words(flow) for flow in flows}
    longest = max(len(f"{flow.agreement_id} · {terms[flow.key]}") for flow in flows)
    run = min(longest * CHARACTER + 16, x2 - x1 - BEND)
    labels: list[str] = []
    for flow in flows:
        y1, y2 = end_y[flow.key, "holder"], end_y[flow.key, "requester"]
        strands = [(kind, False) for kind in flow.classes]
        strands += [(kind, True) for kind in flow.emergency_only_classes]
        said = _described(flow, names)
        parts.append(
            f'<g class="flow" id="flow-{escape(flow.key)}" data-holder="{escape(flow.holder)}" '
            f'data-requester="{escape(flow.requester)}" '
            f'data-agreement="{escape(flow.agreement_id)}" '
            f'data-classes="{" ".join(flow.classes)}"><title>{escape(said)}</title>'
        )
        for index, (kind, emergency) in enumerate(strands):
            offset = (index - (len(strands) - 1) / 2) * STRAND_GAP
            dashes = ' stroke-dasharray="7 4"' if emergency else ""
            parts.append(
                f'<path class="strand {kind}{" emergency" if emergency else ""}" '
                f'd="{_curve(x1, y1 + offset, x2 - HEAD + 1, y2 + offset, run)}" fill="none" '
                f'stroke="{COLOURS[kind]}" stroke-width="3"{dashes}/>'
            )
        parts.append(
            f'<path class="arrow" d="{_curve(x1, y1, x2, y2, run)}" fill="none" stroke="none" '
            'marker-end="url(#arrowhead)"/></g>'
        )
        top = y1 - (len(strands) - 1) / 2 * STRAND_GAP - 7
        labels.append(
            f'<g class="label" data-flow="{escape(flow.key)}"><title>{escape(said)}</title>'
            f'<text x="{x1 + 8}" y="{top:.1f}" font-size="12">'
            f'<tspan class="agreement" font-weight="700">{escape(flow.agreement_id)}</tspan>'
            f'<tspan class="terms" fill="{MUTED}"> · {escape(terms[flow.key])}</tspan>'
            "</text></g>"
        )

    for n in (*holders, *requesters):
        parts.append(_node(n, names, chosen))
    parts += labels
    parts.append("</svg>")
    return "".join(parts)


def _node(n: _Node, names: Names, chosen: str | None) -> str:
    fill = CHOSEN_FILL if n.agency == chosen else NODE_FILL
    stroke = 3 if n.agency == chosen else 1.5
    top = n.middle - (NAME_LINE * len(n.lines) + 14) / 2
    text = "".join(
        f'<text class="name" x="{n.x + 10}" y="{top + 13 + NAME_LINE * i:.1f}" '
        f'font-weight="600">{escape(line)}</text>'
        for i, line in enumerate(n.lines)
    )
    return (
        f'<g class="node {n.role}" id="{n.role}-{escape(n.agency)}" '
        f'data-agency="{escape(n.agency)}"><title>{escape(names.agency(n.agency))} '
        f"({escape(n.agency)})</title>"
        f'<rect x="{n.x}" y="{n.y:.1f}" width="{NODE_WIDTH}" height="{n.height:.1f}" rx="6" '
        f'fill="{fill}" stroke="{INK}" stroke-width="{stroke}"/>{text}'
        f'<text class="agency-id" x="{n.x + 10}" '
        f'y="{top + 13 + NAME_LINE * len(n.lines):.1f}" font-size="11" fill="{MUTED}">'
        f"{escape(n.agency)}</text></g>"
    )


def _legend() -> list[str]:
    parts, x = ['<text x="8" y="22" font-weight="700">Data class:</text>'], 96.0
    for kind in FIELD_CLASSES:
        parts.append(
            f'<line x1="{x}" y1="18" x2="{x + 28}" y2="18" stroke="{COLOURS[kind]}" '
            f'stroke-width="4"/><text x="{x + 34}" y="22">{CLASS_NAMES[kind]}</text>'
        )
        x += 34 + len(CLASS_NAMES[kind]) * 7.5 + 22
    parts.append(
        f'<line x1="{x}" y1="18" x2="{x + 28}" y2="18" stroke="{MUTED}" stroke-width="4" '
        f'stroke-dasharray="7 4"/><text x="{x + 34}" y="22">only by break-glass, in an '
        "emergency</text>"
        f'<text x="8" y="46" fill="{MUTED}">Each arrow is labelled where it leaves the holder: '
        "its agreement, whose data, and whether it needs consent or has a break-glass block."
        "</text>"
    )
    return parts
