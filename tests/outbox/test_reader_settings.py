"""The read-only commands' settings are read from the environment as Settings reads them."""

from __future__ import annotations

import os
from dataclasses import fields

import pytest
from pydantic import ValidationError

from outbox.reader_settings import ReaderSettings, reader_settings
from outbox.settings import Settings, get_settings

NAMES = [field.name for field in fields(ReaderSettings)]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch):
    """Sets variables on an environment holding none of these settings, in any case."""
    for name in list(os.environ):
        if name.lower() in NAMES:
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield lambda **variables: [monkeypatch.setenv(k, v) for k, v in variables.items()]
    get_settings.cache_clear()


def settings_values() -> ReaderSettings | list[tuple[str, str]]:
    """What Settings reads for these names, or where and why it refuses."""
    try:
        settings = Settings()
    except ValidationError as error:
        return [(str(e["loc"]), e["msg"]) for e in error.errors()]
    return ReaderSettings(**{name: getattr(settings, name) for name in NAMES})


def reader_values() -> ReaderSettings | list[tuple[str, str]]:
    try:
        return reader_settings()
    except ValidationError as error:
        return [(str(e["loc"]), e["msg"]) for e in error.errors()]


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"DATABASE_URL": "postgresql+psycopg://u@h/db", "DATABASE_TIMEOUT_SECONDS": "0.5"},
        {"database_url": "sqlite:///lower.db", "Webhook_Deadline_Seconds": "12"},
        {"DATABASE_URL": ""},
        {"DATABASE_TIMEOUT_SECONDS": "1e1"},  # another spelling: Settings reads it
        {"DATABASE_TIMEOUT_SECONDS": " 3 "},
        {"WEBHOOK_DEADLINE_SECONDS": "inf"},
        {"DATABASE_TIMEOUT_SECONDS": "0"},  # not valid: the same error
        {"DATABASE_TIMEOUT_SECONDS": "abc"},
        {"WEBHOOK_DEADLINE_SECONDS": "-1"},
        {"WEBHOOK_DEADLINE_SECONDS": ""},
    ],
)
def test_each_setting_is_what_settings_reads_or_the_same_error(environment, variables):
    environment(**variables)
    assert reader_values() == settings_values()


def test_the_defaults_are_settings_defaults(environment):
    assert reader_settings() == ReaderSettings()
    assert ReaderSettings() == settings_values()


def test_a_plain_value_is_read_without_building_settings(environment, monkeypatch):
    environment(DATABASE_URL="sqlite:///plain.db", DATABASE_TIMEOUT_SECONDS="2.5")
    monkeypatch.setattr("outbox.settings.Settings", None)  # building it would fail
    assert reader_settings() == ReaderSettings("sqlite:///plain.db", 2.5)
