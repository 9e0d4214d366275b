"""Named statements: a column matched against a list given as one parameter, run alike on
either database with exactly the parameters they take."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, select

from outbox.db import transaction
from outbox.driver.batch_writes import insert_all
from outbox.driver.statements import Query, one_of
from tests.outbox.driver.conftest import ENTRIES, entry


def test_one_of_matches_exactly_the_values_listed(sessions, account):
    with transaction(sessions) as session:
        insert_all(session, ENTRIES, [entry(f"k{n}", "1") for n in range(5)])
    with sessions() as session:
        dialect = session.get_bind().dialect.name
        keys = select(ENTRIES.c.key).where(one_of(ENTRIES.c.key, "keys", dialect))
        assert set(session.scalars(keys, {"keys": ["k1", "k3", "nope"]})) == {"k1", "k3"}
        assert set(session.scalars(keys, {"keys": []})) == set()
        ids = select(ENTRIES.c.account_id).where(one_of(ENTRIES.c.account_id, "ids", dialect))
        assert set(session.scalars(ids, {"ids": [1, 2]})) == {1}


def test_a_statement_runs_alike_on_either_database_and_a_list_is_one_parameter(engine, sessions):
    from outbox.models import WebhookEvent
    from tests.factories import incoming, record

    ids = [r.id for r in record(engine, *(incoming(f"evt_{n}") for n in range(3)))]
    table = WebhookEvent.__table__
    among = Query(
        lambda one_of: select(table.c.id).where(
            one_of(table.c.id, "ids"), table.c.id > bindparam("above")
        )
    )
    with sessions() as session:
        assert sorted(among.rows(session, ids=[*ids, 10**9], above=ids[0])) == [
            (i,) for i in ids[1:]
        ]
        assert among.rows(session, ids=[], above=0) == []
        with pytest.raises(TypeError, match=r"\['above', 'ids'\]"):
            among.rows(session, ids=ids)
