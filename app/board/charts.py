"""Chart geometry, computed here and drawn by the templates as SVG: plain numbers in, shapes
out, so the arithmetic is tested without a browser. Sizes are in SVG user units; the charts
scale to their panels (`viewBox`), and every chart has a table of the same figures beside it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None  # a rate from 0 to 1; None: nothing to divide by
    css: str  # the colour class (ahead, normal, lagging, no_progress …)
    text: str  # the value as shown
    y: float = 0
    width: float = 0
    note: str = ""  # a badge after the value (a warning)
    note_css: str = ""


@dataclass(frozen=True)
class BarChart:
    width: float
    height: float
    label_width: float
    bar_x: float
    bar_width: float
    row_height: float
    bar_height: float
    target: float | None
    target_x: float | None
    bars: list[Bar]
    gap_y: float | None = None  # where "… more units …" sits, when the middle is left out
    hidden: int = 0
    ticks: list[tuple[float, str]] = field(default_factory=list)


def bar_chart(
    bars: Sequence[Bar],
    *,
    target: float | None,
    keep: int = 12,
    width: float = 640,
    label_width: float = 230,
    value_width: float = 130,
    row_height: float = 34,
    fill_height: float = 300,
) -> BarChart:
    """Horizontal bars of rates (0–1) in the order given (the caller sorts). With more than
    `keep` bars the chart shows the first and the last ones (the leaders and the laggards, 红黑榜)
    and says how many it left out. Few bars get thicker rows, so that the chart fills its panel."""
    shown = list(bars)
    hidden = 0
    gap_at: int | None = None
    if len(shown) > keep:
        head = keep // 2
        tail = keep - head
        hidden = len(shown) - keep
        gap_at = head
        shown = shown[:head] + shown[-tail:]
    bar_x = label_width
    bar_width = width - label_width - value_width
    top = 30.0  # room for the target's label and the ticks
    rows = len(shown) + (1 if gap_at is not None else 0)
    # Few bars: thicker rows (up to 60) so that the chart fills its panel.
    row_height = max(row_height, min(60.0, (fill_height - top - 6) / max(rows, 1)))
    laid: list[Bar] = []
    gap_y = None
    y = top
    for i, bar in enumerate(shown):
        if gap_at is not None and i == gap_at:
            gap_y = y + row_height / 2
            y += row_height
        value = bar.value if bar.value is not None else 0.0
        laid.append(
            Bar(bar.label, bar.value, bar.css, bar.text, y=y, width=max(0.0, min(1.0, value)) * bar_width,
                note=bar.note, note_css=bar.note_css)
        )  # fmt: skip
        y += row_height
    target_x = bar_x + target * bar_width if target is not None else None
    ticks = [(bar_x + f * bar_width, f"{int(f * 100)}%") for f in (0, 0.5, 1)]
    return BarChart(
        width=width,
        height=top + rows * row_height + 6,
        label_width=label_width,
        bar_x=bar_x,
        bar_width=bar_width,
        row_height=row_height,
        bar_height=row_height * 0.62,
        target=target,
        target_x=target_x,
        bars=laid,
        gap_y=gap_y,
        hidden=hidden,
        ticks=ticks,
    )


@dataclass(frozen=True)
class Column:
    label: str
    count: int
    overdue: int
    css: str
    x: float
    y: float
    height: float
    overdue_y: float
    overdue_height: float


@dataclass(frozen=True)
class Histogram:
    width: float
    height: float
    base_y: float
    column_width: float
    columns: list[Column]


def histogram(
    buckets: Sequence[tuple[str, int, int]],
    *,
    width: float = 600,
    height: float = 300,
    label_height: float = 44,
    top: float = 40,
) -> Histogram:
    """Vertical columns of counts (`(label, count, overdue)` per bucket), scaled to the largest;
    the overdue part of each column is drawn over its foot, hatched by the template."""
    n = max(1, len(buckets))
    slot = width / n
    column_width = slot * 0.64
    base_y = height - label_height
    scale = (base_y - top) / max([c for _, c, _ in buckets] + [1])
    columns = []
    for i, (label, count, overdue) in enumerate(buckets):
        h = count * scale
        oh = min(overdue, count) * scale
        columns.append(
            Column(label, count, overdue, f"age{min(i, 4)}", x=i * slot + (slot - column_width) / 2,
                   y=base_y - h, height=h, overdue_y=base_y - oh, overdue_height=oh)
        )  # fmt: skip
    return Histogram(width=width, height=height, base_y=base_y, column_width=column_width, columns=columns)


@dataclass(frozen=True)
class FlowBox:
    tier: str
    label: str
    x: float
    y: float
    received: int
    solved: int


@dataclass(frozen=True)
class FlowArrow:
    from_tier: str
    to_tier: str
    count: int
    path: str
    label_x: float
    label_y: float
    stroke: float


@dataclass(frozen=True)
class FlowDiagram:
    width: float
    height: float
    box_width: float
    box_height: float
    boxes: list[FlowBox]
    arrows: list[FlowArrow]


TIERS = ("local", "district", "city")


def flow_diagram(
    labels: dict[str, str],
    received: int,
    solved: dict[str, int],
    escalated: Sequence[tuple[str, str, int]],
    *,
    width: float = 600,
    height: float = 330,
) -> FlowDiagram:
    """Three boxes, local → district → city from left to right, each with what it solved; arrows
    between them as thick as their share of the escalations, labelled with the count. Problems
    of city jurisdiction go from local straight to the city: that arrow arcs over the middle."""
    box_width, box_height = 132.0, 104.0
    y = 120.0
    gap = (width - 3 * box_width) / 2
    xs = {t: i * (box_width + gap) for i, t in enumerate(TIERS)}
    boxes = [
        FlowBox(t, labels[t], xs[t], y, received if t == "local" else 0, solved.get(t, 0)) for t in TIERS
    ]
    most = max([n for _, _, n in escalated] + [1])
    arrows = []
    for source, target, count in escalated:
        if source not in xs or target not in xs or count <= 0:
            continue
        stroke = 3 + 9 * count / most
        x1 = xs[source] + box_width
        x2 = xs[target]
        if TIERS.index(target) - TIERS.index(source) == 1:
            mid_y = y + box_height / 2
            path = f"M {x1:.1f} {mid_y:.1f} L {x2 - 14:.1f} {mid_y:.1f}"
            label_x, label_y = (x1 + x2) / 2, mid_y - 14
        else:  # over the middle box
            sx = xs[source] + box_width / 2
            tx = xs[target] + box_width / 2
            path = f"M {sx:.1f} {y:.1f} C {sx:.1f} {y - 90:.1f}, {tx:.1f} {y - 90:.1f}, {tx:.1f} {y - 14:.1f}"
            label_x, label_y = (sx + tx) / 2, y - 74
        arrows.append(FlowArrow(source, target, count, path, label_x, label_y, stroke))
    return FlowDiagram(width, height, box_width, box_height, boxes, arrows)
