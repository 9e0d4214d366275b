"""The driver layer: how the outbox's statements reach psycopg and sqlite3 where SQLAlchemy's
execute path would cost more than the statement, and how the drivers' errors come back.

Only modules of `outbox/` import it (tests/test_layers.py); the domain uses what it needs
of it through outbox/session.py. It uses SQLAlchemy's public API only. Nothing is
imported here, so a command importing one of its modules loads only that one (a listing
never loads SQLAlchemy). One concept a module:

- `statements`: named statements (`Query`), built once per dialect, a list given as one
  parameter (`one_of`: `= ANY(array)` on Postgres, an expanding IN on SQLite); on
  Postgres run prepared on the session's connection, on SQLite through the session. The
  storage operations of `outbox/` and a batch's reads.
- `batch_writes`: a batch's new rows of a table, or its rows written over, in one
  statement whatever their number (`insert_all`, `update_all`, `write_over`).
- `prepared`: statements sent on a SQLAlchemy session's own psycopg connection, inside
  its transaction, prepared on the server, their constants written into the SQL; what
  `statements` and `batch_writes` run on Postgres.
- `libpq`: one prepared statement sent over a psycopg connection's libpq handle on the
  running loop, with binary array parameters: the ingress's INSERT (outbox/store.py).
- `dbapi`: plain DBAPI connections (sqlite3, psycopg) for the operators' named reads
  (outbox/queries.py), with nothing of SQLAlchemy.
- `errors`: a driver's error as the caller expects it: SQLAlchemy's on a session's
  connection, DatabaseError on a plain one.
"""
