"""The overview's chart: one stacked bar a minute, in status order, scaled to a round top."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from outbox.console.chart import HEIGHT, per_minute_chart
from outbox.event_history import MinuteCount

NOW = datetime(2026, 12, 7, 10, 30, 20, tzinfo=UTC)


def test_a_minutes_statuses_stack_bottom_up_in_status_order() -> None:
    minute = NOW.replace(second=0) - timedelta(minutes=5)
    counts = [MinuteCount(minute, "dead", 2), MinuteCount(minute, "done", 6)]
    chart = per_minute_chart(counts, now=NOW, hours=3)
    done, dead = chart.bars
    assert (done.status, dead.status) == ("done", "dead")
    assert done.x == dead.x
    assert done.y + done.height <= HEIGHT and dead.y + dead.height == done.y
    assert chart.total == 8 and chart.peak == 8
    assert [t.label for t in chart.y_ticks] == ["0", "5", "10"]  # 8 rounds up to 10
    assert done.title == "10:25 UTC: 6 done"


def test_minutes_outside_the_window_are_left_out_and_an_empty_chart_draws() -> None:
    old = MinuteCount(NOW - timedelta(hours=4), "done", 3)
    chart = per_minute_chart([old], now=NOW, hours=3)
    assert chart.bars == [] and chart.total == 0
    assert [t.label for t in chart.x_ticks] == [
        "08:00",
        "08:30",
        "09:00",
        "09:30",
        "10:00",
        "10:30",
    ]


def test_an_unknown_status_is_drawn_as_other() -> None:
    chart = per_minute_chart([MinuteCount(NOW.replace(second=0), "weird<b>", 1)], now=NOW, hours=1)
    [bar] = chart.bars
    assert bar.status == "other"
