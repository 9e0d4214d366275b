"""JSON log lines: their fields, their time, and what the fast encoder refuses."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from outbox.logs import LINES, JsonFormatter


def test_a_line_carries_its_extra_fields_and_a_time():
    record = logging.LogRecord(
        "outbox.ingress", logging.INFO, "", 0, "webhook %s", ("stored",), None
    )
    record.delivery_id = "d-1"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "webhook stored"
    assert entry["delivery_id"] == "d-1"
    assert entry["level"] == "info" and entry["logger"] == "outbox.ingress"


def test_the_time_is_utc_iso_8601_with_milliseconds():
    record = logging.LogRecord("outbox.ingress", logging.INFO, "", 0, "m", None, None)
    record.created, record.msecs = 1796575405.1239, 123.9  # 2026-12-06T16:43:25.1239Z
    entry = json.loads(JsonFormatter().format(record))
    assert entry["time"] == "2026-12-06T16:43:25.123Z"
    parsed = datetime.fromisoformat(entry["time"])
    assert parsed.utcoffset() == timedelta(0)
    assert abs(parsed.timestamp() - record.created) < 0.001


def test_lines_within_one_second_carry_their_own_milliseconds():
    formatter = JsonFormatter()
    times = []
    for created in (1796575405.0625, 1796575405.875, 1796575406.5):
        record = logging.LogRecord("outbox.ingress", logging.INFO, "", 0, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        times.append(json.loads(formatter.format(record))["time"])
    assert times == [
        "2026-12-06T16:43:25.062Z",
        "2026-12-06T16:43:25.875Z",
        "2026-12-06T16:43:26.500Z",
    ]


def test_a_line_with_values_the_fast_encoder_refuses_is_still_written():
    record = logging.LogRecord("outbox.worker", logging.INFO, "", 0, "event %s", ("done",), None)
    record.amount = 2**70  # past 64 bits
    record.note = "lone \ud800 surrogate"
    record.when = object()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["amount"] == 2**70
    assert entry["note"] == "lone \ud800 surrogate"
    assert entry["when"].startswith("<object object")


def test_a_record_carrying_lines_is_written_as_one_json_line_each_like_separate_records():
    formatter = JsonFormatter()

    def record_at_one_moment() -> logging.LogRecord:
        # One clock reading for every record: records made a millisecond apart differ in "time".
        made = logging.LogRecord(
            "outbox.processors", logging.INFO, "", 0, "event %s", ("done",), None
        )
        made.created, made.msecs = 1_780_000_000.25, 250.0
        return made

    separate = []
    for n in (1, 2):
        one = record_at_one_moment()
        one.event_id, one.ms = n, 0.5
        separate.append(json.loads(formatter.format(one)))
    batch = record_at_one_moment()
    setattr(batch, LINES, [{"event_id": 1, "ms": 0.5}, {"event_id": 2, "ms": 0.5}])
    lines = formatter.format(batch).split("\n")
    assert [json.loads(line) for line in lines] == separate
