"""The driver layer: how statements reach psycopg and sqlite3 (filled in below)."""
