"""The few settings the read-only commands need (`outbox events list | stats | tail`), read
from the environment without pydantic.

Settings (outbox/settings.py) is a pydantic-settings model: loading pydantic and building it
would cost more than the rest of a listing's work together (docs/performance.md, CLI
start-up). These values are read here as it
reads them: the variable's name in any letter case, the default when it is unset. A value
written in any other way than the plain one (`DATABASE_TIMEOUT_SECONDS=1e1`, `=0`, `=abc`)
is left to Settings, which gives the same value or the same one-line error. These commands
read and check no other setting; `outbox doctor` checks them all.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields

DEFAULT_DATABASE_URL = "sqlite:///./outbox.db"
DEFAULT_DATABASE_TIMEOUT_SECONDS = 2.0
DEFAULT_WEBHOOK_DEADLINE_SECONDS = 5.0

#: Seconds as an operator writes them: ASCII digits, short enough to have one reading.
_SECONDS = re.compile(r"[0-9]{1,15}(\.[0-9]{1,15})?")


@dataclass(frozen=True)
class ReaderSettings:
    """The database to read, how long one call to it may take, and the webhook deadline
    (how late a row may still commit: `events tail` looks back that far)."""

    database_url: str = DEFAULT_DATABASE_URL
    database_timeout_seconds: float = DEFAULT_DATABASE_TIMEOUT_SECONDS
    webhook_deadline_seconds: float = DEFAULT_WEBHOOK_DEADLINE_SECONDS


def reader_settings() -> ReaderSettings:
    """The settings as the environment gives them now; Settings' own when one is not plain."""
    # pydantic-settings (case_sensitive=False) matches variables by their lower-cased name;
    # of two spellings of one name, the later in the environment wins there as here.
    environment = {name.lower(): value for name, value in os.environ.items()}
    given: dict[str, str | float] = {}
    for field in fields(ReaderSettings):
        text = environment.get(field.name)
        if text is None:
            continue
        if isinstance(field.default, str):  # text is taken as written; the others are seconds
            given[field.name] = text
        elif _SECONDS.fullmatch(text) and float(text) > 0:
            given[field.name] = float(text)
        else:
            return from_settings()
    return ReaderSettings(**given)  # type: ignore[arg-type]


def from_settings() -> ReaderSettings:
    """The same values taken from Settings, which raises pydantic's error for a bad one."""
    from outbox.settings import get_settings

    settings = get_settings()
    return ReaderSettings(
        **{field.name: getattr(settings, field.name) for field in fields(ReaderSettings)}
    )
