"""The board's colours, in one place: the stylesheet is rendered from them and the tests check
their contrast numerically (WCAG 2.x relative luminance), so a change that makes the wall screen
harder to read fails a test instead of a meeting.

A dark theme: a wall screen in a lit room glares less, and light text on a dark ground carries
further. Text colours reach at least 7:1 against every panel background (WCAG AAA); chart
colours at least 3:1 (non-text contrast), and the warning colours carry a label as well, never
colour alone.
"""

from __future__ import annotations

BACKGROUNDS = {
    "bg": "#0b1220",  # the page
    "panel": "#111a2e",  # panels and tiles
}
TEXT = {
    "text": "#f1f5f9",
    "muted": "#cbd5e1",
    "link": "#93c5fd",
    "good": "#86efac",
    "bad": "#fca5a5",
    "neutral": "#e2e8f0",
}
# Chart and badge colours (fills on the panel background; badges carry dark text on them).
MARKS = {
    "accent": "#38bdf8",  # bars of a neutral figure, the flow's boxes
    "ahead": "#4ade80",
    "normal": "#38bdf8",
    "lagging": "#fb923c",
    "no_progress": "#f87171",
    "yellow": "#facc15",
    "red": "#f87171",
    "target": "#f8fafc",  # the target line
    "age0": "#38bdf8",
    "age1": "#a3e635",
    "age2": "#facc15",
    "age3": "#fb923c",
    "age4": "#f87171",
}
BADGE_TEXT = "#0b1220"  # text on a coloured badge
GRID = "#334155"  # gridlines and borders: decoration, not information

PALETTE = {**BACKGROUNDS, **TEXT, **MARKS, "badge_text": BADGE_TEXT, "grid": GRID}


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.04045 else float(((c + 0.055) / 1.055) ** 2.4)


def luminance(colour: str) -> float:
    """WCAG relative luminance of `#rrggbb`."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours (1 to 21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def css_variables() -> str:
    """`:root { --bg: …; … }` for the stylesheet."""
    lines = [f"  --{name.replace('_', '-')}: {value};" for name, value in PALETTE.items()]
    return ":root {\n" + "\n".join(lines) + "\n}\n"
