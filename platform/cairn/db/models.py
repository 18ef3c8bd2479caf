"""Cairn's own database: the durable state of runs, step runs, artifacts, lineage and events.

Durable state lives here, never only in Ray (Ray Workflows was removed for keeping it there).
The same models run on SQLite (embedded default) and PostgreSQL (production); the schema is
owned by the Alembic migrations in `migrations/`, and a test checks the two never drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_name: Mapped[str] = mapped_column(String(128), index=True)
    workflow_path: Mapped[str] = mapped_column(Text)
    workflow_text: Mapped[str] = mapped_column(Text)
    workflow_digest: Mapped[str] = mapped_column(String(64))
    # pending → running → succeeded | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    resumed_from: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    code_version: Mapped[str | None] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    ray_address: Mapped[str | None] = mapped_column(Text)
    driver_host: Mapped[str | None] = mapped_column(String(255))
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Who started it: an API token's name through `cairn server`, else the local user.
    owner: Mapped[str | None] = mapped_column(String(128), index=True)


Index("ix_runs_created_at", Run.created_at)  # the runs list pages newest first


class StepRun(Base):
    """One attempt of one step. Retries are new rows with attempt + 1."""

    __tablename__ = "step_runs"
    __table_args__ = (UniqueConstraint("run_id", "step", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    step: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    # pending → running → succeeded | failed | cancelled, or cached (a verified cache hit)
    state: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    node_id: Mapped[str | None] = mapped_column(String(128))
    worker: Mapped[str | None] = mapped_column(String(255))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    # Compute held and used (cairn.stage.usage.summarise): worker/CPU/GPU-seconds, peak memory.
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ArtifactRow(Base):
    """A sealed artifact (or a digested external source, with no producing step run)."""

    __tablename__ = "artifacts"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    uri: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    output_name: Mapped[str | None] = mapped_column(String(64))
    step_run_id: Mapped[int | None] = mapped_column(ForeignKey("step_runs.id"))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="valid")  # valid | corrupt
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StepRunArtifact(Base):
    """What a step run read and produced (a cache hit 'produces' the artifact it reused)."""

    __tablename__ = "step_run_artifacts"
    __table_args__ = (UniqueConstraint("step_run_id", "role", "name", "artifact_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_run_id: Mapped[int] = mapped_column(ForeignKey("step_runs.id"), index=True)
    artifact_digest: Mapped[str] = mapped_column(ForeignKey("artifacts.digest"), index=True)
    role: Mapped[str] = mapped_column(String(8))  # input | output
    name: Mapped[str] = mapped_column(String(64))  # input slot or output name


class LineageEdge(Base):
    """parent artifact → child artifact, through the step run that made the child."""

    __tablename__ = "lineage_edges"
    __table_args__ = (UniqueConstraint("parent_digest", "child_digest", "slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    parent_digest: Mapped[str] = mapped_column(ForeignKey("artifacts.digest"), index=True)
    child_digest: Mapped[str] = mapped_column(ForeignKey("artifacts.digest"), index=True)
    step_run_id: Mapped[int] = mapped_column(ForeignKey("step_runs.id"))
    slot: Mapped[str] = mapped_column(String(64))


class Event(Base):
    """Append-only log of everything that happened to a run: the audit trail."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_run_id_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    step_run_id: Mapped[int | None] = mapped_column(ForeignKey("step_runs.id"))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ApiToken(Base):
    """A `cairn server` API token: its name, role and the sha256 of its secret (never the secret).

    The secret is 256 random bits shown once at creation; a fast hash suffices for a secret that
    cannot be guessed (a slow password hash protects low-entropy passwords, which these are not).
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # viewer | submitter | admin
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StepLease(Base):
    """Who is computing a fingerprint now: one row per fingerprint being computed, so that runs
    started together compute each step once (cairn.engine.leases). The holder is a run; the
    lease is live while that run's driver is (its heartbeat, `Engine.driver_alive`), and a
    run whose driver died leaves a lease that the next run to want the step takes over."""

    __tablename__ = "step_leases"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    step: Mapped[str] = mapped_column(String(64))
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
