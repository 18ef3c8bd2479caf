"""One process at a time through a store's first use.

Cairn's database and MLflow's both create and migrate their schema on first use, and neither
guards it against a second process doing the same at once: three `cairn run` started together
on a new home all died (Alembic: "expected to match one row when updating ... 0 found"; MLflow's
SQLite store: "duplicate column name: step"). `migrating(url)` holds a lock that every process
migrating the same database takes: a lock file beside a SQLite file, PostgreSQL's advisory lock
on the server, so it spans machines. The second process waits, then finds the schema current
and migrates nothing. A process that dies while holding it releases it (the kernel drops a dead
process's `flock`; PostgreSQL ends its session and its advisory locks).
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _sqlite_file(url: str) -> Path | None:
    # sqlite:///relative.db, sqlite:////abs.db; an in-memory database has nothing to share.
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def migrating(url: str, engine: Any = None) -> Iterator[None]:
    """Hold the first-use lock of the database at `url` (`engine`: a SQLAlchemy engine on it,
    needed for PostgreSQL, whose lock lives in a session of the server)."""
    sqlite = _sqlite_file(url)
    if sqlite is not None:
        sqlite.parent.mkdir(parents=True, exist_ok=True)
        with open(sqlite.with_name(sqlite.name + ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    if engine is not None and engine.dialect.name == "postgresql":
        from sqlalchemy import text

        # One key for every first use on the server: Cairn's and MLflow's migrations waiting
        # for each other costs nothing.
        key = int.from_bytes(hashlib.sha256(b"cairn-first-use").digest()[:8], "big", signed=True)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    yield
