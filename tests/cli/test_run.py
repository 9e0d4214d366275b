"""`outbox dev` at start-up: what is not configured is said, a bad HANDLER_TABLE is one line."""

from __future__ import annotations

import logging
from decimal import Decimal

from domain.packs import PackSpec, set_pack
from outbox.cli.run import not_configured
from outbox.db import transaction, utcnow
from outbox.settings import Settings
from tests.packages import install_package


def test_dev_names_each_missing_piece_and_what_it_costs(database_url, sessions):
    bare = Settings(database_url=database_url)
    missing = not_configured(bare)
    assert len(missing) == 3
    assert missing[0].startswith("no GitHub App (GITHUB_APP_ID") and "PR jobs fail" in missing[0]
    assert missing[1].startswith("no STRIPE_API_KEY")
    assert missing[2].startswith("no credit pack on sale")

    with transaction(sessions) as session:
        set_pack(session, PackSpec("price_pro", "Pro", Decimal(85)), now=utcnow())
    configured = Settings(
        database_url=database_url,
        github_app_id="12345",
        github_app_private_key="-----BEGIN RSA PRIVATE KEY-----",
        stripe_api_key="sk_test_x",
    )
    assert not_configured(configured) == []


def test_a_handler_table_that_names_nothing_is_one_line_and_exit_2(cli):
    ran = cli("dev", "--port", "0", handler_table="nowhere.handlers:table")
    assert ran.code == 2
    [line] = [line for line in ran.stderr.splitlines() if line.strip()]
    assert line == "error: HANDLER_TABLE=nowhere.handlers:table: No module named 'nowhere'"
    assert "Traceback" not in ran.stdout + ran.stderr


def test_a_command_run_in_process_leaves_the_logging_of_the_tests_as_it_was(cli):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    cli("dev", "--port", "0", handler_table="nowhere.handlers:table")  # configures logging

    assert root.handlers == handlers and root.level == level


def test_an_entry_point_that_fails_to_import_is_one_line_naming_it_and_exit_2(
    cli, tmp_path, monkeypatch
):
    install_package(tmp_path, "broken_plugin", {"broken": "broken_plugin:register"}, "1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ran = cli("dev", "--port", "0")
    assert ran.code == 2
    [line] = [line for line in ran.stderr.splitlines() if line.strip()]
    assert line == (
        "error: entry point broken (broken_plugin:register) in webhook_outbox.handlers: "
        "ZeroDivisionError: division by zero"
    )


def test_accounts_add_without_kind_keeps_the_kind_an_account_has(cli, sessions):
    from domain.accounts import Account

    assert cli("accounts", "add", "9919", "--login", "acme", "--kind", "Organization").code == 0
    again = cli("accounts", "add", "9919", "--login", "acme-inc")
    assert again.code == 0 and "kind Organization" in again.stdout
    assert cli("accounts", "add", "9920", "--login", "solo").code == 0
    with sessions() as session:
        assert session.get(Account, 9919).kind == "Organization"
        assert session.get(Account, 9919).login == "acme-inc"
        assert session.get(Account, 9920).kind == "User"  # a new account without --kind
