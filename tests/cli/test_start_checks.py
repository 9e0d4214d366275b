"""`outbox serve`, `worker` and `sweep` refuse an unmigrated database in one line;
`outbox serve` says where it listens."""

from __future__ import annotations

import pytest

from outbox.migrate import upgrade
from tests.services import OutboxProcess, outbox_env, wait_until


@pytest.fixture
def unmigrated(tmp_path):
    return f"sqlite:///{tmp_path / 'never-migrated.db'}"


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["sweep", "--once"]])
def test_a_process_refuses_an_unmigrated_database_with_the_hint(cli, unmigrated, command):
    # worker checks Redis first: give it one that answers, so the database is what it refuses
    from tests.conftest import REDIS_URL

    ran = cli(*command, database_url=unmigrated, redis_url=REDIS_URL)
    assert ran.code == 1
    [line] = ran.stderr.strip().splitlines()
    assert line.startswith("error: database not migrated: run `outbox migrate`")
    assert "never-migrated.db" in line


def test_a_process_refuses_a_database_behind_the_head(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0008_ordering_news")
    ran = cli("sweep", "--once", database_url=url)
    assert ran.code == 1
    assert "at 0008_ordering_news, not at the migration head" in ran.stderr
    assert "run `outbox migrate`" in ran.stderr


def test_serve_says_in_one_line_where_it_listens(tmp_path):
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    upgrade(url)
    env = outbox_env(url, redis_url="redis://127.0.0.1:1/0")
    with OutboxProcess(["serve", "--port", "0"], env, log_dir=tmp_path) as server:
        line = wait_until(
            lambda: next((x for x in server.output().splitlines() if "listening on" in x), None),
            timeout=30,
            what="the listening line",
        )
    assert line.startswith("outbox: webhook ingress listening on http://127.0.0.1:")
    port = int(line.rsplit(":", 1)[1])
    assert port > 0
