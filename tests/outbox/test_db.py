"""The engine: each backend's settings."""

from __future__ import annotations

from outbox.db import make_engine


def test_the_embedded_sqlite_syncs_every_commit_so_a_2xx_survives_power_loss(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        engine.dispose()
