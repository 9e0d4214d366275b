"""The commands that run the processors: `outbox dev`, `outbox sweep`, `outbox worker`."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from outbox import claiming
from outbox.db import transaction, utcnow
from outbox.models import Status, WebhookEvent
from tests.factories import record
from tests.processors.handlers import (
    HANDLER_TABLE,
    TEST_EVENT_TYPE,
    effect_counts,
    scripted_event,
)
from tests.services import (
    VENV_BIN,
    OutboxProcess,
    RedisServer,
    free_port,
    outbox_env,
    wait_until,
)

DEAD_REDIS = "redis://127.0.0.1:1/0"


def outbox(*args: str, env: dict[str, str], cwd: str | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [str(VENV_BIN / "outbox"), *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_outbox_dev_applies_a_posted_webhook_with_no_redis(sqlite_db, tmp_path):
    url, engine = sqlite_db
    port = free_port()
    env = outbox_env(url, redis_url=DEAD_REDIS, handler_table=HANDLER_TABLE)
    event = tmp_path / "event.json"
    envelope = {"id": "evt_dev_1", "object": "event", "type": TEST_EVENT_TYPE, "data": {}}
    event.write_text(json.dumps({**envelope, "livemode": False, "created": 1767225600}))
    with OutboxProcess(["dev", "--port", str(port)], env, port=port, log_dir=tmp_path) as dev:
        sent = outbox("send", "stripe", str(event), "--url", f"http://127.0.0.1:{port}", env=env)
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: effect_counts(engine), timeout=20, what="the dev worker")
        assert "in-process worker and sweeper started" in dev.output()
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "outbox_backlog_up 1.0" in metrics and "outbox_due_events " in metrics
    with engine.connect() as conn:
        [row] = conn.execute(select(WebhookEvent.id, WebhookEvent.status)).all()
    assert row.status == Status.DONE and effect_counts(engine) == {row.id: 1}


def test_sweep_once_releases_expired_leases_rings_due_rows_and_says_so(sqlite_db):
    url, engine = sqlite_db
    earlier = utcnow() - timedelta(minutes=1)
    stuck, _due = (r.id for r in record(engine, scripted_event(), scripted_event(), now=earlier))
    with transaction(_sessions(engine)) as session:
        claiming.claim(session, now=earlier, lease=timedelta(seconds=1), ids=[stuck])
    with RedisServer() as redis_server:
        env = outbox_env(url, redis_url=redis_server.url, handler_table=HANDLER_TABLE)
        result = outbox("sweep", "--once", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("released 1 expired lease(s); rang 2 webhook_events")
        as_json = outbox("sweep", "--once", "--json", env=env)
    report = json.loads(as_json.stdout)
    assert report["released"] == 0 and report["errors"] == {}
    assert report["rung"]["webhook_events"] == 2  # other areas' sources are listed too


def test_sweep_once_with_redis_unreachable_says_so_and_works_the_due_events_itself(sqlite_db):
    url, engine = sqlite_db
    record(engine, scripted_event(), now=utcnow() - timedelta(minutes=1))
    result = outbox("sweep", "--once", env=outbox_env(url, redis_url=DEAD_REDIS))
    assert result.returncode == 1  # a step failed: ringing the workers
    assert "webhook_events failed: ConnectionError" in result.stdout
    assert "worked 1 webhook_events here" in result.stdout
    with engine.connect() as conn:  # no handler for the test type in the domain's table
        assert conn.scalar(select(WebhookEvent.status)) == Status.SKIPPED


def test_worker_refuses_to_start_without_redis_and_names_it(sqlite_db):
    result = outbox("worker", env=outbox_env(sqlite_db[0], redis_url=DEAD_REDIS))
    assert result.returncode == 1
    assert "Redis unreachable at redis://127.0.0.1:1/0" in result.stderr


def test_worker_refuses_a_handler_table_that_does_not_exist(sqlite_db, redis_url):
    env = outbox_env(sqlite_db[0], redis_url=redis_url, handler_table="no.such.module:table")
    result = outbox("worker", env=env)
    assert result.returncode == 1
    assert "HANDLER_TABLE=no.such.module:table: No module named 'no'" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["worker", "--processes", "0"], {}, "Invalid value for '--processes'"),
        (["worker", "--threads", "x"], {}, "Invalid value for '--threads'"),
        (["worker"], {"HANDLER_TABLE": "no-colon"}, "setting HANDLER_TABLE: String should"),
        (["sweep", "--once"], {"SWEEP_INTERVAL_SECONDS": "0"}, "SWEEP_INTERVAL_SECONDS"),
    ],
)
def test_bad_options_and_settings_are_usage_errors(sqlite_db, args, env, expected):
    result = outbox(*args, env={**outbox_env(sqlite_db[0], redis_url=DEAD_REDIS), **env})
    assert result.returncode == 2
    assert expected in result.stderr


def _sessions(engine):
    from outbox.db import make_sessionmaker

    return make_sessionmaker(engine)


def test_every_procfile_process_is_a_command_that_exists():
    from typer.testing import CliRunner

    from outbox.cli import app
    from tests.services import ROOT

    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert set(procfile) == {"web", "worker", "sweeper", "release"}
    for command in procfile.values():
        words = command.split()
        assert words[0] == "outbox"
        shown = CliRunner().invoke(app, [words[1], "--help"])
        assert shown.exit_code == 0, shown.output
