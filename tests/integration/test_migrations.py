"""Tests of Cairn's database schema: the Alembic migrations against the ORM models.

The migrations own the schema and the models describe it; these tests check the two never drift,
that every migration goes down as cleanly as it goes up, and that the same models round-trip
JSON and timezone-aware timestamps on both back ends: SQLite (the embedded default) and
PostgreSQL (production; the tests marked `postgres` need the server at 127.0.0.1:5432 and skip,
saying why, when it cannot be reached). Each PostgreSQL test gets a database of its own, created
and dropped around it, so it never meets other data.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from cairn import db
from cairn.db.models import ArtifactRow, Base, Event, Run, StepRun

TABLES = set(Base.metadata.tables)


def tables(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def drift(url: str) -> list[object]:
    """What autogenerate would change to make the database match the models ([] when none)."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    return ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_current_head()


def test_there_is_one_head() -> None:
    script = ScriptDirectory.from_config(db.alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, "migrations branched: merge them (alembic merge)"


def test_upgrade_creates_every_table_and_downgrade_removes_them(url: str) -> None:
    db.upgrade(url)
    assert tables(url) == TABLES | {"alembic_version"}
    assert current_revision(url) == head()

    db.upgrade(url)  # already at head: a no-op, not an error
    assert current_revision(url) == head()

    db.downgrade(url, "base")
    assert tables(url) <= {"alembic_version"}
    assert current_revision(url) is None

    db.upgrade(url)  # and back up again from base
    assert tables(url) == TABLES | {"alembic_version"}
    assert current_revision(url) == head()


def test_migrations_match_the_models(url: str) -> None:
    db.upgrade(url)
    assert drift(url) == [], "models and migrations differ: add a migration (alembic revision)"


def test_indexes_and_constraints_come_from_the_migration(url: str) -> None:
    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            run_indexes = {ix["name"] for ix in insp.get_indexes("runs")}
            uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("step_runs")}
            fks = {fk["referred_table"] for fk in insp.get_foreign_keys("events")}
    finally:
        engine.dispose()
    assert {"ix_runs_state", "ix_runs_workflow_name"} <= run_indexes
    assert ("run_id", "step", "attempt") in uniques
    assert fks == {"runs", "step_runs"}


def _naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def test_rows_round_trip_through_the_orm(url: str) -> None:
    db.upgrade(url)
    started = datetime(2026, 3, 1, 17, 30, 5, 123456, tzinfo=UTC)
    config = {"hidden_size": 128, "betas": [0.9, 0.95], "note": "naïve ✓", "nested": {"a": None}}
    manifest = {"files": {"model.safetensors": {"sha256": "ab" * 32, "size": 12}}, "n": 1}
    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            s.add(
                Run(
                    id="r-1",
                    workflow_name="quickstart",
                    workflow_path="/w/quickstart.yaml",
                    workflow_text="name: quickstart\n",
                    workflow_digest="d" * 64,
                    state="running",
                    started_at=started,
                )
            )
            s.flush()
            step = StepRun(
                run_id="r-1", step="model", kind="pretrain", state="succeeded", config=config
            )
            s.add(step)
            s.flush()
            s.add(
                ArtifactRow(
                    digest="f" * 64,
                    type="model",
                    uri="/store/ff",
                    step_run_id=step.id,
                    size_bytes=5 * 2**32,  # past 32 bits: the column is a BIGINT
                    manifest=manifest,
                )
            )
            s.add(
                Event(
                    run_id="r-1",
                    step_run_id=step.id,
                    type="step_succeeded",
                    message="model done",
                    data={"seconds": 1.5, "ok": True},
                )
            )
            s.commit()
            step_id = step.id

        with Session(engine) as s:
            run = s.get(Run, "r-1")
            assert run is not None
            assert run.cancel_requested is False  # ORM default
            step = s.get(StepRun, step_id)
            assert step is not None
            assert step.attempt == 1
            assert step.config == config
            assert step.resources == {}
            art = s.get(ArtifactRow, "f" * 64)
            assert art is not None
            assert art.manifest == manifest
            assert art.size_bytes == 5 * 2**32
            assert art.status == "valid"
            (event,) = s.query(Event).filter_by(run_id="r-1").all()
            assert event.data == {"seconds": 1.5, "ok": True}
            assert event.step_run_id == step_id

            if url.startswith("postgresql"):
                # timestamptz: aware datetimes, the same instants whatever the session time zone.
                assert run.started_at == started
                for ts in (run.created_at, step.created_at, art.created_at, event.ts):
                    assert ts.tzinfo is not None
            else:
                # SQLite keeps no zone: it hands back naive UTC (cairn.engine.views adds UTC).
                assert run.started_at == started.replace(tzinfo=None)
            now = datetime.now(UTC).replace(tzinfo=None)
            assert abs(now - _naive_utc(run.created_at)) < timedelta(minutes=5)
    finally:
        engine.dispose()
    db.downgrade(url, "base")
    assert tables(url) <= {"alembic_version"}


@pytest.mark.postgres
def test_postgres_timestamps_survive_another_session_time_zone(postgres_url: str) -> None:
    db.upgrade(postgres_url)
    instant = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    engine = db.make_engine(postgres_url, connect_args={"options": "-c timezone=Asia/Kolkata"})
    try:
        with Session(engine) as s:
            s.add(
                Run(
                    id="r-tz",
                    workflow_name="w",
                    workflow_path="p",
                    workflow_text="t",
                    workflow_digest="d",
                    state="pending",
                    heartbeat_at=instant,
                )
            )
            s.commit()
        with Session(engine) as s:
            run = s.get(Run, "r-tz")
            assert run is not None and run.heartbeat_at is not None
            assert run.heartbeat_at == instant
            assert run.heartbeat_at.utcoffset() == timedelta(hours=5, minutes=30)
    finally:
        engine.dispose()
