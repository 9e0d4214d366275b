"""The overview's chart, drawn on the server: events received per minute, stacked by the
status each is in now. Only numbers and the console's own words reach the SVG; the template
(templates/chart.html) writes these shapes with autoescaping and CSS classes, no style
attributes (the Content-Security-Policy forbids inline style)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from outbox.event_history import MinuteCount

#: Stacking order, bottom up, and each status's CSS class.
STATUS_ORDER = ("done", "skipped", "pending", "processing", "dead")
WIDTH = 900
HEIGHT = 220
#: Room for the axis labels: left, bottom.
LEFT = 48
BOTTOM = 22
TOP = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    status: str
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    total: int
    peak: int
    hours: int
    statuses: tuple[str, ...]
    #: The plot's left, bottom and right edges, for the axis lines.
    left: int
    bottom: int
    right: int


def per_minute_chart(counts: list[MinuteCount], *, now: datetime, hours: int) -> Chart:
    """Stacked bars, one a minute, for the `hours` before `now` (UTC)."""
    minutes = hours * 60
    first = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    stacks: dict[int, dict[str, int]] = {}
    for count in counts:
        slot = int((count.minute - first).total_seconds() // 60)
        if 0 <= slot < minutes:
            stacks.setdefault(slot, {})[count.status] = count.count
    peak = max((sum(stack.values()) for stack in stacks.values()), default=0)
    scale_top = _nice_ceiling(peak)
    plot_w = WIDTH - LEFT - 4
    plot_h = HEIGHT - BOTTOM - TOP
    step = plot_w / minutes
    bars = []
    for slot, stack in sorted(stacks.items()):
        base = float(HEIGHT - BOTTOM)
        minute = first + timedelta(minutes=slot)
        for status in (*STATUS_ORDER, *sorted(set(stack) - set(STATUS_ORDER))):
            n = stack.get(status, 0)
            if not n:
                continue
            height = plot_h * n / scale_top
            base -= height
            bars.append(
                Bar(
                    round(LEFT + slot * step, 2),
                    round(base, 2),
                    round(max(step - 0.5, 0.5), 2),
                    round(height, 2),
                    status if status in STATUS_ORDER else "other",
                    f"{minute:%H:%M} UTC: {n} {status}",
                )
            )
    y_ticks = [
        Tick(LEFT - 6, round(HEIGHT - BOTTOM - plot_h * value / scale_top, 2), str(value))
        for value in (0, scale_top // 2, scale_top)
    ]
    every = 60 if hours > 3 else 30
    x_ticks = [
        Tick(round(LEFT + slot * step, 2), HEIGHT - 6, f"{first + timedelta(minutes=slot):%H:%M}")
        for slot in range(minutes)
        if (first + timedelta(minutes=slot)).minute % every == 0
    ]
    return Chart(
        WIDTH,
        HEIGHT,
        bars,
        y_ticks,
        x_ticks,
        sum(sum(stack.values()) for stack in stacks.values()),
        peak,
        hours,
        STATUS_ORDER,
        LEFT,
        HEIGHT - BOTTOM,
        WIDTH - 4,
    )


def _nice_ceiling(peak: int) -> int:
    """The axis's top: 2, 5 or 10 times a power of ten, at least the peak (2 when empty)."""
    if peak <= 2:
        return 2
    magnitude = 1
    while magnitude * 10 < peak:
        magnitude *= 10
    for factor in (1, 2, 5, 10):
        if magnitude * factor >= peak:
            return magnitude * factor
    return magnitude * 10
