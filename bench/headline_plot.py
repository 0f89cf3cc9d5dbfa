"""The headline comparison as a picture: cost and quality of each way side by side, as a
self-contained SVG (no plotting library needed to write or to view it).

    write_svg(path, [Bar("naive", 0.0301, 0.125), Bar("penny", 0.0050, 0.164), ...], note)
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

WIDTH, HEIGHT = 760, 340
PANEL_WIDTH, PANEL_TOP, PANEL_HEIGHT = 300, 70, 190
COLOURS = ("#8c8c8c", "#2b7bb9", "#1a9850", "#d95f02")


@dataclass(frozen=True)
class Bar:
    label: str
    cost_usd: float
    quality: float  # share of answers correct, 0..1


def _panel(x0: int, title: str, bars: list[Bar], values: list[float], top: float,
           labels: list[str]) -> list[str]:
    parts = [f'<text x="{x0 + PANEL_WIDTH / 2}" y="{PANEL_TOP - 22}" text-anchor="middle" '
             f'font-weight="bold">{escape(title)}</text>',
             f'<line x1="{x0}" y1="{PANEL_TOP + PANEL_HEIGHT}" x2="{x0 + PANEL_WIDTH}" '
             f'y2="{PANEL_TOP + PANEL_HEIGHT}" stroke="#333"/>']
    slot = PANEL_WIDTH / len(bars)
    for index, (bar, value, label) in enumerate(zip(bars, values, labels, strict=True)):
        height = PANEL_HEIGHT * (value / top if top else 0.0)
        x = x0 + index * slot + slot * 0.15
        y = PANEL_TOP + PANEL_HEIGHT - height
        parts += [
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{height:.1f}" '
            f'fill="{COLOURS[index % len(COLOURS)]}"/>',
            f'<text x="{x + slot * 0.35:.1f}" y="{y - 5:.1f}" text-anchor="middle">'
            f'{escape(label)}</text>',
            f'<text x="{x + slot * 0.35:.1f}" y="{PANEL_TOP + PANEL_HEIGHT + 18}" '
            f'text-anchor="middle">{escape(bar.label)}</text>',
        ]
    return parts


def render_svg(bars: list[Bar], note: str) -> str:
    """Two panels: cost by the price card (with each way's share of the first bar's cost)
    and quality, one bar per way, in the same order and colours."""
    if not bars:
        raise ValueError("nothing to plot")
    reference = bars[0].cost_usd
    costs = [b.cost_usd for b in bars]
    cost_labels = [f"${b.cost_usd:.4f}" + (f" ({b.cost_usd / reference:.2f}x)"
                                          if reference and i else "")
                   for i, b in enumerate(bars)]
    qualities = [b.quality for b in bars]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        *_panel(50, "cost by the price card (USD)", bars, costs, max(costs) * 1.1,
                cost_labels),
        *_panel(WIDTH - 50 - PANEL_WIDTH, "quality (share of answers correct)", bars,
                qualities, 1.0, [f"{q:.2f}" for q in qualities]),
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 12}" text-anchor="middle" fill="#555">'
        f'{escape(note)}</text>',
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def write_svg(path: Path, bars: list[Bar], note: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_svg(bars, note), encoding="utf-8")
