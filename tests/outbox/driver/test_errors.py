"""A driver's errors as callers see them on a plain connection: about the database itself,
a DatabaseError with the driver's first line; any other, unchanged. (On a session's
connection they are SQLAlchemy's: tests/outbox/driver/test_prepared.py.)"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from outbox.driver.errors import DatabaseError, translated_errors


def test_a_sqlite_operational_error_is_a_database_error_with_its_first_line():
    cause = sqlite3.OperationalError("database is locked\nmore")
    with pytest.raises(DatabaseError) as raised, translated_errors():
        raise cause
    assert raised.value.reason == "database is locked"
    assert raised.value.sqlstate is None
    assert raised.value.__cause__ is cause


def test_a_missing_table_on_postgres_is_a_database_error_with_its_sqlstate():
    with pytest.raises(DatabaseError) as raised, translated_errors():
        raise psycopg.errors.UndefinedTable('relation "webhook_events" does not exist')
    assert raised.value.reason == 'relation "webhook_events" does not exist'
    assert raised.value.sqlstate == "42P01"


@pytest.mark.parametrize(
    "error",
    [
        ValueError("naive datetime"),
        sqlite3.IntegrityError("UNIQUE"),
        psycopg.errors.UniqueViolation(),
    ],
)
def test_any_other_error_passes_unchanged(error):
    with pytest.raises(type(error)) as raised, translated_errors():
        raise error
    assert raised.value is error
