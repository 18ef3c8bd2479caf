"""Shared fixtures: one Ray instance for the whole session (Ray start costs ~5 s and ~1 GB)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"

# Ray Train V2 polls workers every 2 s by default, which makes each report() block that long.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance (2 CPUs), started once per test session."""
    import ray

    if not ray.is_initialized():
        # address="local": never the cluster a test's `ray start` left its address for.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _postgres_admin() -> Engine:
    """An AUTOCOMMIT engine on the `postgres` database (CREATE DATABASE cannot run in a
    transaction), or a skip that says why there is none."""
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install -e '.[dev]'")
    admin = create_engine(
        f"{PG_SERVER}/postgres",
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
    )
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # any failure to connect means "no server here", not a test failure
        admin.dispose()
        pytest.skip(
            f"PostgreSQL is not reachable at {PG_SERVER} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); start it, or run -m 'not postgres'"
        )
    return admin


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    admin = _postgres_admin()
    name = f"cairn_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cairn.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database on each back end."""
    return request.getfixturevalue(f"{request.param}_url")
