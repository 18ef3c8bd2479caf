"""`cairn submit` without a cluster: what the Jobs API is handed, against a recording fake of
Ray's JobSubmissionClient. The job's runtime_env (readable by anyone who reaches the Jobs API or
the dashboard) must hold no credential; each one left out is said once, with where the cluster
supplies it. tests/integration/test_cli_lifecycle.py submits to a real Ray head."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cairn.db.models import Event, Run
from cairn.engine import jobs
from cairn.errors import CairnError
from cairn.workflow import load_workflow
from tests.unit.engine.test_engine import make_engine, write_wf

SECRET = "s3cret-XYZ"


class FakeJobs:
    """Records each submission; fails it when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.fail = fail

    def submit_job(self, **job: Any) -> str:
        if self.fail:
            raise RuntimeError("the head said no")
        self.jobs.append(job)
        return str(job["submission_id"])


@pytest.fixture
def engine_with_secrets(home):  # noqa: F811
    """An engine on SQLite (a unit test has no PostgreSQL) whose MLflow URI and store carry
    credentials, as a production deployment's would."""
    engine = make_engine(home)
    engine.settings = dataclasses.replace(
        engine.settings,
        mlflow_uri=f"https://alice:{SECRET}@mlflow.example.com",
        store=f"s3://bucket/cairn?token={SECRET}",
    )
    return engine


def submit(engine, home: Path, client: FakeJobs, monkeypatch, notes: list[str]) -> str:  # noqa: F811
    monkeypatch.setattr(jobs, "job_client", lambda address: client)
    wf = load_workflow(write_wf(home))
    return jobs.submit(engine, wf, "http://127.0.0.1:8265", note=notes.append)


def test_the_job_gets_no_credential_and_the_user_is_told_where_they_go(
    engine_with_secrets,
    home,  # noqa: F811
    monkeypatch,
) -> None:
    client, notes = FakeJobs(), []
    run_id = submit(engine_with_secrets, home, client, monkeypatch, notes)
    (job,) = client.jobs
    assert SECRET not in json.dumps(job)  # entrypoint, runtime_env, metadata: all of it
    env = job["runtime_env"]["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com"
    assert env["CAIRN_STORE"] == "s3://bucket/cairn"
    assert env["CAIRN_DATABASE_URL"] == engine_with_secrets.settings.database_url  # SQLite: as is
    assert job["submission_id"] == run_id
    assert [n.split(" goes to the job")[0] for n in notes] == [
        "note: MLFLOW_TRACKING_URI",
        "note: CAIRN_STORE",
    ]
    assert all(SECRET not in n for n in notes)
    with engine_with_secrets.sessions() as s:
        events = s.scalars(
            select(Event).where(Event.run_id == run_id, Event.type == "secrets_withheld")
        ).all()
    assert [f"note: {e.message}" for e in events] == notes  # `cairn status` shows them too


def test_a_failed_submission_leaves_no_run_and_no_note(
    engine_with_secrets,
    home,  # noqa: F811
    monkeypatch,
) -> None:
    notes: list[str] = []
    with pytest.raises(CairnError, match="submitting to http://127.0.0.1:8265 failed"):
        submit(engine_with_secrets, home, FakeJobs(fail=True), monkeypatch, notes)
    assert notes == []
    with engine_with_secrets.sessions() as s:
        assert s.scalars(select(Run)).all() == [] and s.scalars(select(Event)).all() == []
