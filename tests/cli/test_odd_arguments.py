"""Ids, accounts and pages that cannot be what they claim: one line on stderr, exit 2."""

from __future__ import annotations

import pytest

from tests.cli.conftest import stored

HUGE = "9" * 5000

ODD = [
    ("events", "list", "--account", "²"),
    ("events", "list", "--account", "9223372036854775808"),
    ("events", "list", "--account", HUGE),
    ("events", "list", "--before-id", "9223372036854775808"),
    ("events", "list", "--before-id", "²"),
    ("events", "list", "--page", "922337203685477580"),
    ("events", "list", "--page", "0"),
    ("events", "show", "²"),
    ("events", "show", "9999999999999999999"),
    ("events", "show", HUGE),
    ("events", "replay", "--dry-run", "9999999999999999999"),
    ("events", "replay", "--dry-run", "--account", "²"),
    ("accounts", "show", "9223372036854775808"),
    ("accounts", "add", "9223372036854775808", "--login", "octo"),
    ("accounts", "add", "²", "--login", "octo"),
    ("credits", "show", "①"),
    ("jobs", "show", "9223372036854775808"),
    ("jobs", "retry", "²"),
    ("jobs", "list", "--account", HUGE),
]


@pytest.mark.parametrize("args", ODD, ids=lambda a: " ".join(x[:24] for x in a))
def test_an_id_account_or_page_that_cannot_be_one_is_one_line_and_exit_2(cli, engine, args):
    stored(engine)
    ran = cli(*args)
    assert ran.code == 2, (ran.stdout, ran.stderr)
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert ran.stderr.startswith("error:") and len(ran.stderr) < 300
