"""Durable state under --state-dir: SQLite by default."""
