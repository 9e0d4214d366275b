"""The billing commands: credits, packs, accounts; clear errors and the right exit codes."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from domain import balances, ledger
from domain.accounts import Account, account_for_customer
from domain.packs import list_packs
from outbox.cli import app
from outbox.db import transaction
from outbox.settings import get_settings
from tests.domain.billing_support import NOW, SEED_PACKS, seed


@pytest.fixture
def cli(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("WELCOME_CREDITS", "50")
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    yield run
    get_settings.cache_clear()


def said(result) -> str:
    """What a command printed, with Rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def octocat(sessions):
    seed(sessions, 583231, welcome="50")
    with transaction(sessions) as s:
        s.get(Account, 583231).login = "octocat"
    return 583231


def test_credits_show_by_id_or_login(cli, octocat):
    by_login = cli("credits", "show", "OctoCat")
    assert by_login.exit_code == 0, by_login.output
    assert "balance 50 held 0 available 50 debt 0" in said(by_login)
    by_id = cli("credits", "show", str(octocat), "--json")
    assert json.loads(by_id.stdout) == {
        "account_id": octocat, "login": "octocat", "balance": "50.0000", "held": "0.0000",
        "available": "50.0000", "debt": "0.0000",
    }  # fmt: skip


def test_credits_adjust_writes_an_operator_entry_with_its_own_key(cli, octocat, sessions):
    result = cli("credits", "adjust", "octocat", "-12.5", "--reason", "goodwill reversal")
    assert result.exit_code == 0, result.output
    assert "-12.5 credits" in said(result) and "balance 37.5" in said(result)
    again = cli("credits", "adjust", "octocat", "2", "--reason", "gift", "--key", "t-1")
    again = cli("credits", "adjust", "octocat", "2", "--reason", "gift", "--key", "t-1")
    assert again.exit_code == 0 and "already applied" in said(again)
    with transaction(sessions) as s:
        entries = balances.history(s, octocat)
    assert [e.amount for e in entries] == [Decimal(50), Decimal("-12.5"), Decimal(2)]
    assert entries[1].key.startswith("adjust:") and entries[1].reason.startswith("operator:")
    assert entries[2].key == "adjust:t-1"
    history = cli("credits", "history", "octocat", "--json")
    assert [json.loads(line)["amount"] for line in history.stdout.splitlines()] == [
        "50.0000", "-12.5000", "2.0000",
    ]  # fmt: skip
    assert cli("credits", "history", "octocat").exit_code == 0


def test_an_adjustment_key_reused_for_other_content_is_refused_naming_its_first_use(
    cli, octocat, sessions
):
    seed(sessions, 7)
    assert cli("credits", "adjust", "octocat", "5", "--reason", "gift", "--key", "k").exit_code == 0
    same = cli("credits", "adjust", "octocat", "5", "--reason", "other words", "--key", "k")
    assert same.exit_code == 0 and "already applied" in said(same)
    for args in (("octocat", "6"), ("7", "5"), ("octocat", "-5")):
        reused = cli("credits", "adjust", *args, "--reason", "gift", "--key", "k")
        assert reused.exit_code == 1, reused.output
        assert "'adjust:k' was already used for account 583231, 5 credits" in said(reused)
    with transaction(sessions) as s:
        assert (balances.balance(s, octocat), balances.balance(s, 7)) == (Decimal(55), Decimal(0))


def test_a_reused_key_that_paid_debt_is_still_the_same_adjustment(cli, octocat, sessions):
    with transaction(sessions) as s:
        ledger.take_back(s, octocat, Decimal(60), key="refund:x", reason="refund", now=NOW)
    for _ in range(2):
        result = cli("credits", "adjust", "octocat", "15", "--reason", "gift", "--key", "d")
        assert result.exit_code == 0, result.output
    with transaction(sessions) as s:
        assert (balances.balance(s, octocat), balances.debt(s, octocat)) == (Decimal(5), Decimal(0))


@pytest.mark.parametrize("amount", ["1e3", "0.00001", "abc", "nan", "inf", "0", "1,5", ""])
def test_a_malformed_amount_is_a_usage_error_and_changes_nothing(cli, octocat, sessions, amount):
    result = cli("credits", "adjust", "octocat", amount, "--reason", "x")
    assert result.exit_code == 2, result.output
    assert "error:" in said(result) and "Traceback" not in said(result)
    with transaction(sessions) as s:
        assert balances.balance(s, octocat) == Decimal(50)


def test_an_adjustment_that_would_make_the_balance_negative_is_refused(cli, octocat, sessions):
    result = cli("credits", "adjust", "octocat", "-50.0001", "--reason", "too much")
    assert result.exit_code == 1
    assert "50.0000 credits available" in said(result)
    with transaction(sessions) as s:
        assert balances.balance(s, octocat) == Decimal(50)


@pytest.mark.parametrize(
    "args",
    [("credits", "show", "nobody"), ("credits", "history", "404"),
     ("credits", "adjust", "nobody", "5", "--reason", "x"), ("accounts", "show", "nobody"),
     ("accounts", "link", "nobody", "cus_1")],
)  # fmt: skip
def test_an_unknown_account_fails_with_a_clear_message(cli, octocat, args):
    result = cli(*args)
    assert result.exit_code == 1
    assert "no account with id or login" in said(result)


def test_an_adjustment_needs_a_reason(cli, octocat):
    assert cli("credits", "adjust", "octocat", "5").exit_code == 2
    assert cli("credits", "adjust", "octocat", "5", "--reason", " ").exit_code == 2


def test_packs_load_set_list_and_remove(cli, sessions):
    loaded = cli("packs", "load", str(SEED_PACKS))
    assert loaded.exit_code == 0, loaded.output
    assert "3 added" in said(loaded)
    listed = [json.loads(line) for line in cli("packs", "list", "--json").stdout.splitlines()]
    assert [(p["name"], p["credits"], p["price"], p["currency"]) for p in listed] == [
        ("Découverte", "25", "4.99", "eur"), ("Pro", "85", "14.99", "eur"),
        ("Organisme", "250", "39.99", "eur"),
    ]  # fmt: skip
    assert "4,99 €" in said(cli("packs", "list"))  # people read the price as it is written
    result = cli("packs", "set", "price_essai", "--name", "Essai", "--credits", "2.5",
                 "--price", "0.99", "--currency", "EUR")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert cli("packs", "remove", "price_pro").exit_code == 0
    assert cli("packs", "remove", "price_pro").exit_code == 1
    with transaction(sessions) as s:
        assert [p.price_id for p in list_packs(s)] == [
            "price_essai", "price_decouverte", "price_organisme",
        ]  # fmt: skip
        assert len(list_packs(s, include_retired=True)) == 4
    assert "retired" in said(cli("packs", "list", "--all"))


def test_packs_list_json_is_a_pack_file_that_load_reads_back(cli, tmp_path):
    assert cli("packs", "load", str(SEED_PACKS)).exit_code == 0
    assert cli("packs", "set", "price_old", "--name", "Old", "--credits", "0.5", "--price", "1",
               "--currency", "usd", "--retired").exit_code == 0  # fmt: skip
    listed = cli("packs", "list", "--all", "--json").stdout
    saved = tmp_path / "catalog.jsonl"
    saved.write_text(listed, encoding="utf-8")

    reloaded = cli("packs", "load", str(saved))

    assert reloaded.exit_code == 0, reloaded.output
    assert "4 updated" in said(reloaded)
    assert cli("packs", "list", "--all", "--json").stdout == listed


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("[[pack]]\nprice_id = 'p'\nname = 'X'\ncredits = 'lots'\n", ".toml", "credits"),
        ("[[pack]]\nprice_id = 'p'\nname = 'X'\ncredits = 1.00001\n", ".toml", "decimal places"),
        ('{"pack": [{"price_id": "p", "name": "X", "credits": -1}]}', ".json", "more than zero"),
        ('{"pack": [{"price_id": "p", "credits": 1}]}', ".json", "name"),
        (
            '{"pack": [{"price_id": "p", "name": "X", "credits": 1, "colour": 1}]}',
            ".json",
            "colour",
        ),
        ("not toml = = =", ".toml", "not valid TOML"),
        ("{", ".json", "not valid JSON"),
        ("[]", ".json", "expected a list of packs"),
    ],
)
def test_a_bad_pack_file_is_refused_whole_with_the_field_named(
    cli, sessions, tmp_path, content, suffix, message
):
    path = tmp_path / f"packs{suffix}"
    path.write_text(content)
    result = cli("packs", "load", str(path))
    assert result.exit_code == 2, result.output
    assert message in said(result)
    with transaction(sessions) as s:
        assert list_packs(s, include_retired=True) == []


def test_packs_set_refuses_a_bad_amount(cli):
    result = cli("packs", "set", "price_x", "--name", "X", "--credits", "1e3")
    assert result.exit_code == 2 and "plain decimal" in said(result)
    assert cli("packs", "load", "/nonexistent.toml").exit_code == 2


def test_accounts_add_link_list_and_show(cli, sessions):
    added = cli("accounts", "add", "9919", "--login", "acme", "--kind", "Organization")
    assert added.exit_code == 0 and "50 welcome credits" in said(added)
    assert "already exists" in said(cli("accounts", "add", "9919", "--login", "acme"))
    assert cli("accounts", "add", "9920", "--login", "x", "--kind", "Robot").exit_code == 2
    linked = cli("accounts", "link", "acme", "cus_QXg1o8vcGmoR32")
    assert linked.exit_code == 0, linked.output
    assert cli("accounts", "link", "acme", "not-a-customer").exit_code == 2
    cli("accounts", "add", "9921", "--login", "other")
    stolen = cli("accounts", "link", "other", "cus_QXg1o8vcGmoR32")
    assert stolen.exit_code == 1 and "linked to account 9919" in said(stolen)
    with transaction(sessions) as s:
        assert account_for_customer(s, "cus_QXg1o8vcGmoR32").id == 9919
    rows = [json.loads(line) for line in cli("accounts", "list", "--json").stdout.splitlines()]
    assert [(r["id"], r["balance"]) for r in rows] == [(9919, "50.0000"), (9921, "50.0000")]
    shown = json.loads(cli("accounts", "show", "acme", "--json").stdout)
    assert shown["stripe_customer_id"] == "cus_QXg1o8vcGmoR32"
    assert shown["paid_features"] is False and shown["subscriptions"] == []
    assert cli("accounts", "show", "9919").exit_code == 0


def test_an_unmigrated_database_is_named_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["credits", "show", "1"], catch_exceptions=False)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "outbox migrate" in said(result)
