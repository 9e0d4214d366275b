"""How operators write times on the command line: a duration back from now, or an ISO date."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from outbox.cli.common import usage_error

#: Unit letter -> seconds.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$", re.IGNORECASE)
DURATION_HELP = "a duration back from now (45s, 30m, 3h, 2d, 90d, 1w) or an ISO date"


def parse_duration(text: str, option: str) -> timedelta:
    """`30m`, `3h`, `2d`: a usage error naming `option` for anything else."""
    match = _DURATION.match(text)
    if not match:
        usage_error(f"bad duration for {option}: {text!r} (use 45s, 30m, 3h, 2d, 90d or 1w)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_moment(text: str, option: str, *, now: datetime) -> datetime:
    """A duration back from `now`, or an ISO date / date-time (UTC unless it says otherwise)."""
    if _DURATION.match(text):
        return now - parse_duration(text, option)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        usage_error(f"bad time for {option}: {text!r} (use {DURATION_HELP}, e.g. 2026-11-30)")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
