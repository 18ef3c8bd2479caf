"""Connecting to Cairn's database: a password-less URL gets its password from
CAIRN_DATABASE_PASSWORD_FILE, and no error shows the password."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from cairn import db
from cairn.errors import CairnError

SECRET = "s3cret-XYZ"


def test_the_engine_connects_with_the_password_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text(f"{SECRET}\n")
    monkeypatch.setenv("CAIRN_DATABASE_PASSWORD_FILE", str(tmp_path / "pw"))
    engine = db.make_engine("postgresql+psycopg://cairn@db.invalid:5432/cairn")  # no connection
    assert engine.url.password == SECRET and engine.url.username == "cairn"
    assert SECRET not in repr(engine)  # SQLAlchemy masks it too
    cfg = db.alembic_config("postgresql+psycopg://cairn@db.invalid:5432/cairn")
    assert SECRET in cfg.get_main_option("sqlalchemy.url")  # migrations connect the same way


def test_a_database_that_cannot_be_opened_is_named_without_its_password() -> None:
    url = f"postgresql+psycopg://cairn:{SECRET}@127.0.0.1:1/cairn?connect_timeout=3"  # refused
    with pytest.raises(CairnError) as e:
        db.sessions(url)
    message = str(e.value)
    assert "cannot open Cairn's database at postgresql+psycopg://cairn:***@127.0.0.1:1/" in message
    assert SECRET not in message and "Check CAIRN_DATABASE_URL" in message


def test_a_driver_error_that_quotes_the_password_is_scrubbed_and_not_chained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql+psycopg://cairn:{SECRET}@db.invalid/cairn"

    def upgrade(u: str, revision: str = "head") -> None:
        raise RuntimeError(f"could not use {u}")

    monkeypatch.setattr(db, "upgrade", upgrade)
    with pytest.raises(CairnError) as e:
        db.sessions(url)
    assert "could not use postgresql+psycopg://cairn:***@db.invalid/cairn" in str(e.value)
    printed = "".join(traceback.format_exception(e.value))
    assert SECRET not in printed  # not even in a chained cause of the traceback


def test_a_url_without_a_password_that_needs_one_says_where_to_supply_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the driver of a submitted job sees when the cluster supplies no password."""

    def upgrade(u: str, revision: str = "head") -> None:
        raise RuntimeError("connection failed: fe_sendauth: no password supplied")

    monkeypatch.delenv("CAIRN_DATABASE_PASSWORD_FILE", raising=False)
    monkeypatch.setattr(db, "upgrade", upgrade)
    with pytest.raises(CairnError) as e:
        db.sessions("postgresql+psycopg://cairn@db.invalid/cairn")
    assert "The URL holds no password: supply it here with CAIRN_DATABASE_PASSWORD_FILE" in str(
        e.value
    )
