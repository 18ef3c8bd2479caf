"""Database access: engine creation, schema upgrades (Alembic), and sessions.

Connecting is where a password-less URL gets its password from `CAIRN_DATABASE_PASSWORD_FILE`
(`cairn.settings.with_database_password`; the settings module says why). A URL is only ever
shown redacted, and errors are scrubbed of its password.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from cairn.errors import CairnError
from cairn.firstuse import migrating
from cairn.settings import redact, scrub, url_secrets, with_database_password

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"


def make_engine(url: str, **kw: Any) -> Engine:
    url = with_database_password(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kw)

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets `cairn status` read while a run writes; foreign keys are off by default.
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # In WAL mode NORMAL still survives a killed process (SIGKILL); only a power cut can
            # lose the last commits. FULL costs an fsync per state change.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kw)


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    if not (MIGRATIONS / "env.py").exists():
        raise CairnError(
            f"Alembic migrations not found at {MIGRATIONS}: install Cairn from its source tree "
            "(`pip install -e .`), which keeps migrations/ beside platform/"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", with_database_password(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate to `revision`; processes that start together on a new database take turns
    (`cairn.firstuse`), and those after the first find nothing to do."""
    from alembic import command

    engine = None if url.startswith("sqlite") else make_engine(url)  # PostgreSQL's lock needs one
    try:
        with migrating(url, engine):
            command.upgrade(alembic_config(url), revision)
    finally:
        if engine is not None:
            engine.dispose()


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


@cache
def sessions(url: str) -> sessionmaker[Session]:
    """A session factory for `url`, with the schema upgraded to head on first use."""
    try:
        upgrade(url)
    except CairnError:
        raise
    except Exception as e:
        secrets = url_secrets(with_database_password(url))
        detail = scrub(str(e), secrets)
        hint = ""
        if not secrets and "password" in detail.lower():
            # Typically a submitted job: its URL came without the password (cairn.settings).
            hint = (
                " The URL holds no password: supply it here with CAIRN_DATABASE_PASSWORD_FILE "
                "(a mounted secret file), or PGPASSWORD, PGPASSFILE or ~/.pgpass."
            )
        error = CairnError(
            f"cannot open Cairn's database at {redact(url)}: {detail}.{hint} Check "
            "CAIRN_DATABASE_URL and that the server is up; `cairn db upgrade` applies migrations "
            "by hand."
        )
        # A driver error that quotes the password is not chained: a traceback would show it.
        raise error from (e if detail == str(e) else None)
    return sessionmaker(make_engine(url), expire_on_commit=False)
