"""What the console's forms send, understood as the CLI understands its options.

The event filters are `outbox events list`'s (outbox/cli/event_options.py FilterArgs: the
same statuses, sources, `*` wildcards, account by id or login, `3h` / ISO times), carried
in the URL so a filtered listing can be shared. A POST body is a small urlencoded form,
read here without a multipart parser.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from outbox.cli.common import CommandFailed
from outbox.cli.event_options import FilterArgs
from outbox.fields import as_int64
from outbox.states import Source, Status

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from starlette.datastructures import QueryParams
    from starlette.requests import Request

    from outbox.driver.dbapi import Connection
    from outbox.queries import EventFilter

#: Largest POST body the console reads (a confirmed replay's ids, at most MAX_REPLAY).
MAX_FORM_BYTES = 64 * 1024
#: Longest text a filter field may hold.
MAX_FIELD_CHARS = 255


class BadInput(ValueError):
    """A form or URL the console cannot use; the message says why, for the operator."""


@dataclass(frozen=True)
class FilterForm:
    """The event filters as the form (and the URL) carries them: text, not yet understood."""

    status: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    type: str = ""
    account: str = ""
    since: str = ""
    until: str = ""
    delivery: str = ""

    @classmethod
    def from_query(cls, params: QueryParams) -> FilterForm:
        """The filters of a URL's query; BadInput for a status or source that is none."""
        statuses = tuple(dict.fromkeys(v for v in params.getlist("status") if v))
        sources = tuple(dict.fromkeys(v for v in params.getlist("source") if v))
        _require_known(statuses, {s.value for s in Status}, "status")
        _require_known(sources, {s.value for s in Source}, "source")
        texts = {name: params.get(name, "").strip() for name in _TEXT_FIELDS}
        for name, value in texts.items():
            if len(value) > MAX_FIELD_CHARS:
                raise BadInput(f"{name} is longer than {MAX_FIELD_CHARS} characters")
        return cls(statuses, sources, **texts)

    @property
    def given(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def args(self) -> FilterArgs:
        """The same filters as the CLI's options."""
        return FilterArgs(
            status=[Status(s) for s in self.status] or None,
            source=[Source(s) for s in self.source] or None,
            event_type=self.type or None,
            account=self.account or None,
            since=self.since or None,
            until=self.until or None,
            delivery=self.delivery or None,
        )

    def resolve(self, db: Connection, now: datetime) -> EventFilter:
        """The filter they mean, read as the CLI reads it; BadInput with the CLI's reason."""
        try:
            return self.args().resolve(db, now)
        except CommandFailed as exc:
            raise BadInput(str(exc)) from None

    def query(self, **extra: Any) -> str:
        """The filters (and `extra`, which replaces a field of its name) as a URL query,
        empty fields left out."""
        pairs: list[tuple[str, Any]] = [("status", s) for s in self.status]
        pairs += [("source", s) for s in self.source]
        pairs += [
            (name, getattr(self, name))
            for name in _TEXT_FIELDS
            if getattr(self, name) and name not in extra
        ]
        pairs += [(name, value) for name, value in extra.items() if value is not None]
        return urlencode(pairs)


_TEXT_FIELDS = ("type", "account", "since", "until", "delivery")


def _require_known(values: Sequence[str], known: set[str], name: str) -> None:
    for value in values:
        if value not in known:
            raise BadInput(f"{name} {value!r} is not one of {', '.join(sorted(known))}")


def row_id(text: str | None, what: str) -> int | None:
    """A row id from a URL or form (1 to 2**63-1, ASCII digits); None when empty."""
    if text is None or not text.strip():
        return None
    value = as_int64(text.strip())
    if value is None or value < 1:
        raise BadInput(f"{what} {text[:40]!r} is not a number from 1 to {2**63 - 1}")
    return value


def id_list(text: str, *, most: int) -> list[int]:
    """Row ids written with commas or spaces between them, in the order given, once each."""
    ids: list[int] = []
    for part in text.replace(",", " ").split():
        value = row_id(part, "event id")
        if value is not None and value not in ids:
            ids.append(value)
    if len(ids) > most:
        raise BadInput(f"{len(ids)} ids: the console replays at most {most} at once")
    return ids


async def read_form(request: Request) -> Mapping[str, str]:
    """A urlencoded POST body as a mapping (the last value of a repeated name wins)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise BadInput("expected a form (application/x-www-form-urlencoded)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadInput(f"form larger than {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=32, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadInput("the form could not be read") from None
    return {name: values[-1] for name, values in parsed.items()}
