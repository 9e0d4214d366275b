"""Building the dispatch table: HANDLER_TABLE first, then installed packages' entry points;
and the processors applying every handler of an event in its one transaction."""

from __future__ import annotations

import importlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from outbox import operator_writes
from outbox.db import transaction, utcnow
from outbox.dispatch import HandlerTableNotFound, load_handler_table
from outbox.handling import EventContext, Handler, HandlerTable, RetryLater
from outbox.models import Status, WebhookEvent
from outbox.registry import Registry
from outbox.settings import Settings
from processors import runtime as runtimes
from processors.apply import Outcome, process_pass
from tests.factories import record
from tests.packages import install_package
from tests.processors.handlers import TEST_EVENT_TYPE, effect_counts, effects, scripted_event


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


PLUGIN = """
from outbox import operator_writes
from outbox.db import transaction, utcnow
from outbox.handling import Handler

def register(registry, settings):
    registry.on("github", "issues.*", Handler("{name}", apply=lambda s, e, p: None))
"""


def test_handler_table_comes_first_then_entry_points_by_name(site: Path, settings: Settings):
    suffix = uuid.uuid4().hex[:8]
    install_package(site, f"zeta_{suffix}", {"zeta": f"zeta_{suffix}:register"},
                    PLUGIN.format(name="zeta"))  # fmt: skip
    install_package(site, f"alpha_{suffix}", {"alpha": f"alpha_{suffix}:register"},
                    PLUGIN.format(name="alpha"))  # fmt: skip
    config = settings.model_copy(update={"handler_table": f"{__name__}:issues_table"})
    table = load_handler_table(config)
    assert table[("github", "issues.opened")].name == "domain_issues+alpha+zeta"
    assert table[("github", "issues.closed")].name == "alpha+zeta"
    assert table.get(("github", "push")) is None


def issues_table(_settings: Settings) -> HandlerTable:
    return {("github", "issues.opened"): Handler("domain_issues", apply=lambda s, e, p: None)}


def test_the_domains_table_is_the_default_and_keeps_its_exact_types(settings: Settings):
    from domain.handlers import handler_table

    table = load_handler_table(settings)
    for key, handler in handler_table(settings).items():
        assert table[key].name == handler.name  # alone: not composed, apply_many kept
        assert (table[key].apply_many is None) == (handler.apply_many is None)


@pytest.mark.parametrize(
    ("entry", "code", "says"),
    [
        ("nowhere_{s}:register", "", "No module named 'nowhere_"),
        ("{m}:missing", "", "has no attribute 'missing'"),
        ("{m}:REGISTER", "REGISTER = 3\n", "int is not callable"),
        (
            "{m}:register",
            "def register(registry, settings):\n    registry.on('github', 'is*', None)\n",
            "expected a Handler",
        ),
        (
            "{m}:register",
            "def register(registry, settings):\n    raise RuntimeError('no config\\nat all')\n",
            "RuntimeError: no config",
        ),
        ("{m}:register", "import json\n1 / 0\n", "ZeroDivisionError: division by zero"),
    ],
)
def test_a_broken_entry_point_is_one_line_naming_it(site, settings, entry, code, says):
    module = f"broken_{uuid.uuid4().hex[:8]}"
    install_package(site, module, {"broken": entry.format(m=module, s=module)}, code)
    with pytest.raises(HandlerTableNotFound) as raised:
        load_handler_table(settings)
    message = str(raised.value)
    assert message.startswith(f"entry point broken ({entry.format(m=module, s=module)})")
    assert says in message and "\n" not in message


def test_a_handler_table_that_is_no_table_is_refused(settings: Settings):
    config = settings.model_copy(update={"handler_table": f"{__name__}:not_a_table"})
    with pytest.raises(HandlerTableNotFound, match="returned list, not a table"):
        load_handler_table(config)


def not_a_table(_settings: Settings) -> list[str]:
    return []


# --- applied by the processors --------------------------------------------------------------


def effect_writer(name: str) -> Handler:
    def apply(session: Any, event: EventContext, prepared: Any) -> None:
        if (event.payload.get("test") or {}).get("refuse") == name and event.attempts < 2:
            raise RetryLater(f"{name}: not yet")
        session.execute(
            insert(effects).values(event_id=event.id, pid=0, attempt=event.attempts, started=0)
        )

    return Handler(name, apply=apply)


def two_writers(_settings: Settings) -> HandlerTable:
    return {("stripe", TEST_EVENT_TYPE): effect_writer("first")}


def register_second(registry: Registry, _settings: Settings) -> None:
    registry.on("stripe", "test.*", effect_writer("second"))


def test_every_handler_of_an_event_applies_once_in_its_one_transaction(
    runtime, proc_settings, site
):
    module = f"second_{uuid.uuid4().hex[:8]}"
    install_package(site, module, {"second": f"{__name__}:register_second"}, "")
    # A retry far off: with the suite's 0.05 s backoff a slow pass claimed it again.
    config = proc_settings.model_copy(
        update={"handler_table": f"{__name__}:two_writers", "retry_base_seconds": 60.0}
    )
    both = runtimes.configure(config, engine=runtime.engine)
    [plain, refused] = [
        r.id
        for r in record(both.engine, scripted_event(), scripted_event(script={"refuse": "second"}))
    ]
    assert process_pass(both, [plain, refused]) == {Outcome.DONE: 1, Outcome.RETRY: 1}
    # The second handler's RetryLater rolled the first's effect back with it.
    assert effect_counts(both.engine) == {plain: 2}
    with both.sessions() as session:
        row = session.get_one(WebhookEvent, refused)
        assert row.status == Status.PENDING
        assert row.last_error == "RetryLater: second: not yet"
    with transaction(both.sessions) as session:
        assert operator_writes.retry_now(session, [refused], now=utcnow()) == [refused]
    assert process_pass(both, [refused]) == {Outcome.DONE: 1}
    assert effect_counts(both.engine) == {plain: 2, refused: 2}
