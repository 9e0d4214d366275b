"""Alembic environment and versions for Postgres and SQLite (applied by `outbox migrate`)."""
