"""JSON log lines, and the buffered handler `outbox serve` writes them through."""

from __future__ import annotations

import json
import logging
import os
import select
import time

from outbox.logs import FLUSH_INTERVAL, LINES, BufferedStderrHandler, JsonFormatter


def _logger(handler: logging.Handler) -> logging.Logger:
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test.logs.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def _read_lines(fd: int, wait: float) -> list[dict[str, object]]:
    data = b""
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        data += os.read(fd, 65536)
    return [json.loads(line) for line in data.decode().splitlines()]


def test_a_line_carries_its_extra_fields_and_a_time():
    record = logging.LogRecord(
        "outbox.ingress", logging.INFO, "", 0, "webhook %s", ("stored",), None
    )
    record.delivery_id = "d-1"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "webhook stored"
    assert entry["delivery_id"] == "d-1"
    assert entry["level"] == "info" and len(entry["time"]) == len("2026-01-01T00:00:00")


def test_buffered_lines_reach_stderr_soon_even_when_nothing_else_is_logged():
    read_end, write_end = os.pipe()
    try:
        logger = _logger(BufferedStderrHandler(fd=write_end))
        for n in range(3):
            logger.info("webhook stored", extra={"delivery_id": f"d-{n}"})
        lines = _read_lines(read_end, wait=FLUSH_INTERVAL * 10)
        assert [line["delivery_id"] for line in lines] == ["d-0", "d-1", "d-2"]
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_warning_is_written_at_once_with_the_lines_before_it():
    read_end, write_end = os.pipe()
    try:
        logger = _logger(BufferedStderrHandler(fd=write_end))
        logger.info("webhook stored")
        logger.warning("doorbell failed")
        lines = _read_lines(read_end, wait=FLUSH_INTERVAL / 5)
        assert [line["message"] for line in lines] == ["webhook stored", "doorbell failed"]
    finally:
        os.close(read_end)
        os.close(write_end)


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
    separate = []
    for n in (1, 2):
        one = logging.LogRecord(
            "outbox.processors", logging.INFO, "", 0, "event %s", ("done",), None
        )
        one.event_id, one.ms = n, 0.5
        separate.append(json.loads(formatter.format(one)))
    batch = logging.LogRecord("outbox.processors", logging.INFO, "", 0, "event %s", ("done",), None)
    batch.created = one.created
    setattr(batch, LINES, [{"event_id": 1, "ms": 0.5}, {"event_id": 2, "ms": 0.5}])
    lines = formatter.format(batch).split("\n")
    assert [json.loads(line) for line in lines] == separate
