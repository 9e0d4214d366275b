"""A prepared statement sent over libpq: same values, same errors, a usable connection after."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from outbox.driver.libpq import BINARY, TEXT, PreparedStatement, bytea_array

pytestmark = pytest.mark.postgres


def _connect(postgres_url: str) -> psycopg.AsyncConnection:
    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.AsyncConnection.connect(conninfo, autocommit=True)


def test_a_binary_bytea_array_arrives_byte_for_byte(postgres_url):
    values = [b"", b"\x00\xff\x00", "é".encode() * 3000, b"{}"]
    statement = PreparedStatement("test_echo", "SELECT encode(v, 'hex') FROM unnest($1::bytea[]) v")

    async def echo() -> list[bytes]:
        async with await _connect(postgres_url) as conn:
            result = await statement.execute(conn, [bytea_array(values)], [BINARY])
            return [bytes.fromhex((result.get_value(n, 0) or b"").decode()) for n in range(4)]

    assert asyncio.run(echo()) == values


def test_a_failing_statement_raises_psycopgs_error_and_the_connection_goes_on(postgres_url):
    statement = PreparedStatement("test_cast", "SELECT $1::int")

    async def run() -> int | None:
        async with await _connect(postgres_url) as conn:
            with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                await statement.execute(conn, [b"not a number"], [TEXT])
            result = await statement.execute(conn, [b"41"], [TEXT])
            cursor = await conn.execute("SELECT 1")  # psycopg's own use is unaffected
            assert await cursor.fetchone() == (1,)
            return int(result.get_value(0, 0) or 0) + 1

    assert asyncio.run(run()) == 42


def test_each_new_connection_gets_the_statement_prepared(postgres_url):
    statement = PreparedStatement("test_again", "SELECT $1::text")

    async def twice() -> list[bytes | None]:
        answers = []
        for word in (b"one", b"two"):
            async with await _connect(postgres_url) as conn:
                answers.append((await statement.execute(conn, [word], [TEXT])).get_value(0, 0))
        return answers

    assert asyncio.run(twice()) == [b"one", b"two"]


def test_a_connection_the_server_closed_raises_operational_error(postgres_url):
    statement = PreparedStatement("test_gone", "SELECT 1")

    async def run() -> None:
        async with await _connect(postgres_url) as conn, await _connect(postgres_url) as admin:
            await statement.execute(conn, [], [])
            await admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            with pytest.raises(psycopg.OperationalError):
                await statement.execute(conn, [], [])

    asyncio.run(run())
