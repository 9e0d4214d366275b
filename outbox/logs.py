"""Structured logs: one JSON object per line on stderr, with the fields a caller passes in
`extra`, each stamped with its time in UTC (ISO-8601, milliseconds: 2026-12-06T16:43:25.123Z).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

#: The fallback for what orjson refuses (integers past 64 bits, lone surrogates); built
#: once, as json.dumps(..., default=str) builds a new encoder at every call.
_encode_slowly = json.JSONEncoder(default=str).encode


def _encode(entry: dict[str, Any]) -> str:
    try:
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _encode_slowly(entry)


#: The attribute of a record (set through `extra`) that carries one dict of fields per
#: line: such a record is written as one JSON line per dict, each with the record's time,
#: level, logger and message, exactly as that many records would be. A batch of events
#: logs its outcomes with one pass through logging's machinery (record, handler lock,
#: formatter, write) instead of one pass each.
LINES = "json_lines"


class JsonFormatter(logging.Formatter):
    """A record as a JSON line (or lines, see LINES): time, level, logger, message, extras."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        lines = record.__dict__.get(LINES)
        if lines is not None:
            return "\n".join(_encode({**entry, **fields}) for fields in lines)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return _encode(entry)

    def _time(self, record: logging.LogRecord) -> str:
        # The part up to the second is formatted once a second: a busy process logs many
        # lines within one.
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{int(record.msecs):03d}Z"


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr at `level`, written by the caller's thread.

    The standard library's StreamHandler: the processes log a record per batch (of
    webhooks, of events; see LINES), so one write per record is cheap, and handing records
    to a thread of its own (logging.handlers.QueueHandler) costs more than it saves.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # The JSON lines print none of the caller's file and line, thread or process: the
    # logging HOWTO's "Optimization" switches spare finding them for every record.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic narrates every plugin it loads at INFO; only its problems are news here.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
