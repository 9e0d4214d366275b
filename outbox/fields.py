"""Picking typed values out of untrusted JSON without ever raising (ingress and reconcile)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: Characters kept of a stored text field (a delivery id, an event type, a done row's note).
TEXT_FIELD_CAP = 255
_INT64 = 2**63 - 1
_INT64_DIGITS = 19  #: a run of more ASCII digits is out of range whatever it says


def dig(document: Any, *path: str) -> Any:
    """document[path[0]][path[1]]…, or None where any step is missing or not an object."""
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def as_int64(value: Any) -> int | None:
    """An integer that fits a BIGINT column, or None (out of range counts as absent).

    Strings of ASCII digits count: str.isdigit() also takes "²" (which int() refuses)
    and "٣" (which it reads as 3), and int() refuses strings of over 4,300 digits.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = ascii_int(value)
    if isinstance(value, int) and -_INT64 <= value <= _INT64:
        return value
    return None


def ascii_int(text: str, max_digits: int = _INT64_DIGITS) -> int | None:
    """The number written in `text` as 1 to `max_digits` ASCII digits, else None."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
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


def clean_text(value: str | None, cap: int = TEXT_FIELD_CAP) -> str | None:
    """Text from a webhook as a column can hold it: no NUL, no lone surrogate, capped."""
    if value is None:
        return None
    if value.isascii():  # no lone surrogate in it: the usual id or name, spared two copies
        return value.replace("\x00", "")[:cap]
    # JSON may carry lone surrogates ("\ud800"), which no UTF-8 database column can hold:
    # left in, one such signed body would be refused with 503 forever, with its batch.
    text = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text[:cap]
