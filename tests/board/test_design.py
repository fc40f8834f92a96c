"""The board's design as numbers: the contrast of its palette (WCAG 2.x), its two languages,
and the geometry of its charts."""

from __future__ import annotations

import re
from pathlib import Path

from app.board import palette
from app.board.charts import Bar, bar_chart, flow_diagram, histogram
from app.board.i18n import EVENTS, LABELS, STATUS, Lang
from app.board.palette import BACKGROUNDS, MARKS, TEXT, contrast

STATIC = Path(palette.__file__).parent / "static"
TEMPLATES = Path(palette.__file__).parent / "templates"


def test_contrast_formula_matches_wcag_reference_values() -> None:
    assert round(contrast("#000000", "#ffffff"), 1) == 21.0
    assert round(contrast("#777777", "#ffffff"), 2) == 4.48  # the classic just-fails-AA grey
    assert contrast("#0b1220", "#0b1220") == 1.0


def test_text_reaches_aaa_and_marks_reach_non_text_contrast() -> None:
    for name, colour in TEXT.items():
        for ground, background in BACKGROUNDS.items():
            assert contrast(colour, background) >= 7.0, f"text {name} on {ground}"
    for name, colour in MARKS.items():
        for ground, background in BACKGROUNDS.items():
            assert contrast(colour, background) >= 3.0, f"mark {name} on {ground}"
        # Badges carry dark text on the mark colour: text contrast, AA at least.
        assert contrast(palette.BADGE_TEXT, colour) >= 4.5, f"badge text on {name}"
    # Yellow and red warnings, and the four progress classes, are told apart by more than hue.
    assert contrast(MARKS["yellow"], MARKS["red"]) >= 1.5
    assert len({MARKS[c] for c in ("ahead", "normal", "lagging", "no_progress")}) == 4


def test_the_stylesheet_uses_only_the_palette() -> None:
    css = (STATIC / "board.css").read_text()
    assert not re.findall(r"#[0-9a-fA-F]{3,6}\b", css), "a colour outside palette.py"
    used = set(re.findall(r"var\(--([\w-]+)\)", css))
    defined = {name.replace("_", "-") for name in palette.PALETTE}
    assert used <= defined, used - defined
    for template in TEMPLATES.glob("*.html"):
        assert not re.search(r'\b(fill|stroke)="#', template.read_text()), template.name


def test_every_label_exists_in_both_languages() -> None:
    for table in (LABELS, STATUS, EVENTS):
        for name, texts in table.items():
            assert set(texts) == {lang.value for lang in Lang}, name
            assert all(texts.values()), name
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"\bw\.(\w+)\b", template.read_text()))
        used |= set(re.findall(r"""\bw\[["'](\w+)["']\]""", template.read_text()))
        used |= set(re.findall(r"""\bw\(["'](\w+)["']""", template.read_text()))
    methods = {"status", "event", "role", "tier"}
    assert used - methods - set(LABELS) == set()


def test_bar_chart_keeps_the_leaders_and_the_laggards() -> None:
    bars = [Bar(f"u{i}", 1 - i / 20, "normal", "") for i in range(20)]
    chart = bar_chart(bars, target=0.8, keep=6)
    assert [b.label for b in chart.bars] == ["u0", "u1", "u2", "u17", "u18", "u19"]
    assert chart.hidden == 14 and chart.gap_y is not None
    assert chart.target_x == chart.bar_x + 0.8 * chart.bar_width
    assert chart.bars[0].width == chart.bar_width  # 100 %
    ys = [b.y for b in chart.bars]
    assert ys == sorted(ys) and len(set(ys)) == 6
    none = bar_chart([Bar("x", None, "none", "—")], target=None)
    assert none.bars[0].width == 0 and none.target_x is None


def test_histogram_scales_to_the_largest_column_and_marks_the_overdue_part() -> None:
    chart = histogram([("0-3", 4, 0), ("4-7", 8, 2), ("8-15", 0, 0), ("16-30", 2, 2), ("31+", 1, 1)])
    heights = [c.height for c in chart.columns]
    assert heights[1] == max(heights) and heights[0] == heights[1] / 2 and heights[2] == 0
    assert chart.columns[1].overdue_height == heights[1] / 4
    assert all(c.y + c.height == chart.base_y for c in chart.columns)
    assert [c.css for c in chart.columns] == ["age0", "age1", "age2", "age3", "age4"]


def test_flow_diagram_draws_escalations_between_tiers() -> None:
    labels = {"local": "基层", "district": "区", "city": "市"}
    diagram = flow_diagram(
        labels, 20, {"local": 3, "district": 7}, [("local", "district", 13), ("local", "city", 4)]
    )
    assert [(b.tier, b.solved) for b in diagram.boxes] == [("local", 3), ("district", 7), ("city", 0)]
    assert diagram.boxes[0].received == 20
    direct, over = diagram.arrows
    assert direct.stroke > over.stroke and " C " in over.path and " L " in direct.path
