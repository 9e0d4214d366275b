"""Picking typed values out of untrusted JSON without ever raising (ingress and reconcile)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_INT64 = 2**63 - 1


def dig(document: Any, *path: str) -> Any:
    """document[path[0]][path[1]]…, or None where any step is missing or not an object."""
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def as_int64(value: Any) -> int | None:
    """An integer that fits a BIGINT column; numeric strings count, anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and -_INT64 <= value <= _INT64:
        return value
    return None


def as_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def as_time(value: Any) -> datetime | None:
    """A Unix timestamp in seconds as an aware datetime, or None when it is not one."""
    seconds = as_int64(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
