"""First use of a Cairn home by several processes at once: Cairn's database and MLflow's store are
created and migrated once, every process goes on, and none shows a traceback.

Before `cairn.firstuse`, three processes started together on a new home all died: Alembic's
"expected to match one row when updating ... 0 found" for Cairn's schema, MLflow's "duplicate
column name: step" for its own. The processes here do what `cairn run` does first (open the
database, start MLflow's client, find or create the workflow's experiment), released together.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.together import BARRIER, together

FIRST_USE = (
    """
import sys
from cairn.db import sessions
from cairn.tracking.mlflow import MlflowTracker
"""
    + BARRIER
    + """
database, mlflow_uri = sys.argv[1], sys.argv[2]
sessions(database)
if mlflow_uri != "-":
    print(MlflowTracker(mlflow_uri, sys.argv[3])._experiment("wf"))
"""
)


def _together(n: int, database: str, mlflow_uri: str = "-", artifacts: str = "-") -> list[str]:
    """`n` processes that first-use the stores at one moment; their outputs."""
    go = Path(tempfile.mkdtemp()) / "go"
    return together(FIRST_USE, [[database, mlflow_uri, artifacts]] * n, go)


def _revision(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


def _head(url: str) -> str:
    from alembic.script import ScriptDirectory

    from cairn.db import alembic_config

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_processes_starting_together_on_a_new_home_share_one_schema(tmp_path: Path) -> None:
    home = tmp_path / "home"
    database, mlflow_uri = f"sqlite:///{home / 'cairn.db'}", f"sqlite:///{home / 'mlflow.db'}"
    experiments = _together(4, database, mlflow_uri, str(home / "mlartifacts"))
    assert len(set(experiments)) == 1  # one experiment for the workflow, found or made once
    assert _revision(database) == [_head(database)]  # one row: migrated once, to the head
    engine = create_engine(mlflow_uri)
    try:
        assert "metrics" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM experiments")).scalar() == 2  # + Default
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_processes_starting_together_on_a_new_postgres_database_migrate_it_once(
    postgres_url: str,
) -> None:
    _together(4, postgres_url)
    assert _revision(postgres_url) == [_head(postgres_url)]
