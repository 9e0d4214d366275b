"""Structured logs: one JSON object per line, with the fields a caller passes in `extra`."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

#: The fallback for what orjson refuses (integers past 64 bits, lone surrogates); built
#: once, as json.dumps(..., default=str) builds a new encoder at every call.
_encode_slowly = json.JSONEncoder(default=str).encode


def _encode(entry: dict[str, Any]) -> str:
    # orjson: a log line in a fifth of the time, which a line per webhook makes count.
    try:
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _encode_slowly(entry)


#: The attribute of a record (set through `extra`) that carries one dict of fields per
#: line: such a record is written as one JSON line per dict, each with the record's time,
#: level, logger and message, exactly as that many records would be. A batch of events
#: logs its outcomes with one pass through logging's machinery (record, handler lock,
#: formatter) instead of one pass each, which cost more than writing the lines.
LINES = "json_lines"

FLUSH_INTERVAL = 0.1  #: seconds an INFO line may wait in a buffered handler's buffer
BUFFER_BYTES = 64 * 1024  #: characters of log lines a buffered handler holds between writes


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
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

    def _time(self, created: float) -> str:
        # Formatted once a second: a busy ingress logs thousands of lines within one.
        second = int(created)
        stamp = self._stamp
        if stamp[0] != second:
            stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(second)))
            self._stamp = stamp
        return stamp[1]


class BufferedStderrHandler(logging.Handler):
    """Writes whole lines to stderr in blocks instead of one system call each.

    For `outbox serve`, which logs a line per webhook: the write per line cost as much
    as formatting it. Warnings and errors are written at once; other lines within
    FLUSH_INTERVAL (a small thread sees to it, so a quiet server still shows its last
    lines) or as soon as BUFFER_BYTES of them wait.
    """

    def __init__(self, fd: int = 2) -> None:
        super().__init__()
        self._fd = fd
        self._lines: list[str] = []
        self._size = 0
        self._pending = threading.Event()
        threading.Thread(target=self._flush_now_and_then, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or self._size >= BUFFER_BYTES:
            self._write()
        elif not self._pending.is_set():  # set() takes a lock and notifies: once per flush
            self._pending.set()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        # Called with the handler's lock held (emit runs under it).
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8", "backslashreplace")
        self._lines, self._size = [], 0
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:  # stderr is gone: the lines are lost, the server goes on
            return

    def _flush_now_and_then(self) -> None:
        while True:
            self._pending.wait()
            time.sleep(FLUSH_INTERVAL)
            self._pending.clear()
            self.flush()


def configure_logging(level: str = "INFO", *, buffered: bool = False) -> None:
    """JSON lines on stderr at `level`; `buffered` for a long-running server (see above)."""
    handler = BufferedStderrHandler() if buffered else logging.StreamHandler(sys.stderr)
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
