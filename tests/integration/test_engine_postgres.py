"""Cairn's run state on PostgreSQL (production), with the same engine and toy stages as the unit
tests: states, attempts, lineage, events and cache hits all live in the database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from cairn.db.models import Event, LineageEdge, Run, StepRun
from cairn.workflow import load_workflow
from tests.unit.engine.conftest import home  # noqa: F401  (the fixture)
from tests.unit.engine.test_engine import make_engine, states, write_wf

pytestmark = pytest.mark.postgres


def test_run_state_retries_and_cache_on_postgres(home, postgres_url, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CAIRN_DATABASE_URL", postgres_url)
    engine = make_engine(home)
    assert engine.settings.database_url == postgres_url
    counter = home / "counter"
    fit = f"{{fail_times: 1, counter: '{counter}'}}"
    first = engine.run(load_workflow(write_wf(home, fit=fit, retries=1)))
    assert first.state == "succeeded" and first.steps["fit"].attempts == 2
    second = engine.run(load_workflow(write_wf(home, fit=fit, retries=1)))
    assert states(second) == {"count": "cached", "fit": "cached"}
    with engine.sessions() as s:
        runs = s.scalars(select(Run).order_by(Run.created_at)).all()
        assert [r.state for r in runs] == ["succeeded", "succeeded"]
        assert runs[0].started_at.tzinfo is not None  # timezone-aware on PostgreSQL
        attempts = s.scalars(
            select(StepRun.state)
            .where(StepRun.run_id == first.run_id, StepRun.step == "fit")
            .order_by(StepRun.attempt)
        ).all()
        assert attempts == ["failed", "succeeded"]
        assert s.scalar(select(func.count()).select_from(LineageEdge)) == 2  # source→data→model
        kinds = s.scalars(select(Event.type).where(Event.run_id == second.run_id)).all()
        assert kinds.count("cached") == 2
