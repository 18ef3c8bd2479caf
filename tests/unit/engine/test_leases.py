"""Each fingerprint computed once across concurrent runs (cairn.engine.leases).

Runs of overlapping workflows, each in a process of its own, released at one moment against one
database and one store (the real engine, SQLite and PostgreSQL; steps run inline, no Ray): every
step is computed by exactly one step run, the others take it from the cache naming the run that
computed it, no finished artifact is quarantined or replaced, and no lease is left. A lease held
by a run whose driver died is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from cairn.db.models import ArtifactRow, Event, Run, StepLease, StepRun, utcnow
from cairn.engine import leases
from tests import REPO
from tests.together import BARRIER, together

# Count (shared by every run), then a slow fit whose width splits the runs in two groups.
WF = """
name: leased
steps:
  count:
    kind: toy_count
    inputs: {{sources: [./data]}}
  fit:
    kind: toy_fit
    inputs: {{dataset: count.dataset}}
    config: {{width: {width}, sleep_s: 1.0}}
"""

RUN = (
    """
import json, sys
import tests.unit.engine.toy_stages
from cairn.engine import Engine
from cairn.settings import Settings
from cairn.testing import InlineExecutor, MemoryTracker
from cairn.workflow import load_workflow

home, path = sys.argv[1], sys.argv[2]
engine = Engine(Settings.from_env(home), executor=InlineExecutor(), tracker=MemoryTracker())
wf = load_workflow(path)
"""
    + BARRIER
    + """
r = engine.run(wf)
print(json.dumps({"run": r.run_id, "state": r.state, "steps": {n: s.state for n, s in r.steps.items()}}))
"""
)


def _workflows(folder: Path) -> list[Path]:
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "a.txt").write_text("one\ntwo\nthree\n")
    paths = []
    for width in (4, 8):
        p = folder / f"fit{width}.yaml"
        p.write_text(WF.format(width=width))
        paths.append(p)
    return paths


def _run_together(home: Path, paths: list[Path], n: int, database: str | None) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "MLFLOW_"))}
    env["PYTHONPATH"] = str(REPO)
    if database:
        env["CAIRN_DATABASE_URL"] = database
    args = [[str(home), str(paths[i % len(paths)])] for i in range(n)]
    outs = together(RUN, args, home.parent / "go", env)
    return [json.loads(out.splitlines()[-1]) for out in outs]


def _sessions(url: str) -> sessionmaker[Session]:
    return sessionmaker(create_engine(url), expire_on_commit=False)


def _check_each_step_computed_once(home: Path, url: str, results: list[dict]) -> None:
    assert {r["state"] for r in results} == {"succeeded"}, results
    with _sessions(url)() as s:
        step_runs = list(s.scalars(select(StepRun)))
        computed: dict[str | None, list[StepRun]] = {}
        for sr in step_runs:
            assert sr.state in ("succeeded", "cached"), (sr.step, sr.state, sr.error)
            if sr.state == "succeeded":
                computed.setdefault(sr.fingerprint, []).append(sr)
        # count once for all; fit once per width
        assert sorted(sr.step for done in computed.values() for sr in done) == [
            "count",
            "fit",
            "fit",
        ]
        assert all(len(done) == 1 for done in computed.values())
        assert len(step_runs) == 2 * len(results)  # the rest came from the cache
        by_fp = {fp: done[0].run_id for fp, done in computed.items()}
        cached = {sr.id: sr for sr in step_runs if sr.state == "cached"}
        for e in s.scalars(select(Event).where(Event.type == "cached")):
            assert e.data["computed_by"] == by_fp[cached[e.step_run_id].fingerprint], e.message
        assert {a.status for a in s.scalars(select(ArtifactRow))} == {"valid"}
        assert list(s.scalars(select(StepLease))) == []  # every lease given back
    assert not (home / "store" / ".quarantine").exists()  # no finished artifact replaced


def test_concurrent_runs_compute_each_step_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    results = _run_together(home, _workflows(tmp_path / "wf"), 6, None)
    _check_each_step_computed_once(home, f"sqlite:///{home / 'cairn.db'}", results)


@pytest.mark.postgres
def test_concurrent_runs_on_postgres_compute_each_step_once(
    tmp_path: Path, postgres_url: str
) -> None:
    home = tmp_path / "home"
    results = _run_together(home, _workflows(tmp_path / "wf"), 6, postgres_url)
    _check_each_step_computed_once(home, postgres_url, results)


def _running(run_id: str, driver_pid: int) -> Run:
    """A run row as a live driver on this host leaves it (beating), with `driver_pid`."""
    return Run(
        id=run_id,
        workflow_name="w",
        workflow_path="w.yaml",
        workflow_text="",
        workflow_digest="d",
        state="running",
        driver_host=socket.gethostname(),
        driver_pid=driver_pid,
        heartbeat_at=utcnow(),
    )


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_lease_is_held_while_its_driver_lives_and_taken_over_when_it_dies(tmp_path: Path) -> None:
    from cairn.db import sessions

    maker = sessions(f"sqlite:///{tmp_path / 'cairn.db'}")
    with maker.begin() as s:
        s.add_all([_running("r-a", os.getpid()), _running("r-b", os.getpid())])
    assert leases.take(maker, "fp1", "r-a", "fit") == leases.Taken()
    assert leases.take(maker, "fp1", "r-a", "fit") == leases.Taken()  # ours already
    assert leases.take(maker, "fp1", "r-b", "train") == leases.Held("r-a", "fit")
    with maker.begin() as s:
        s.get_one(Run, "r-a").driver_pid = _dead_pid()  # r-a's driver dies
    assert leases.take(maker, "fp1", "r-b", "train") == leases.Taken(from_run="r-a")
    assert leases.take(maker, "fp1", "r-a", "fit") == leases.Held("r-b", "train")
    leases.release(maker, "r-b", "fp1")
    assert leases.take(maker, "fp1", "r-a", "fit") == leases.Taken()


def test_a_run_takes_over_the_lease_of_a_dead_run_and_computes_the_step(tmp_path: Path) -> None:
    """The steps' leases held by a run whose driver died (a killed `cairn run`): the next run
    computes them, and says whose lease it took."""
    from tests.unit.engine.test_engine import make_engine, write_wf

    (tmp_path / "first" / "wf" / "data").mkdir(parents=True)
    (tmp_path / "first" / "wf" / "data" / "a.txt").write_text("one\ntwo\nthree\n")
    first = make_engine(tmp_path / "first").run(_load(write_wf(tmp_path / "first")))
    fps = {n: r.fingerprint for n, r in first.steps.items()}  # content-addressed: any home's

    (tmp_path / "second" / "wf" / "data").mkdir(parents=True)
    (tmp_path / "second" / "wf" / "data" / "a.txt").write_text("one\ntwo\nthree\n")
    engine = make_engine(tmp_path / "second")
    with engine.sessions.begin() as s:
        s.add(_running("r-dead", _dead_pid()))
        s.flush()
        for step, fp in fps.items():
            s.add(StepLease(fingerprint=fp, run_id="r-dead", step=step))
    result = engine.run(_load(write_wf(tmp_path / "second")))
    assert {r.state for r in result.steps.values()} == {"succeeded"}
    with engine.sessions() as s:
        taken = list(s.scalars(select(Event).where(Event.type == "lease_taken_over")))
        assert sorted(e.data["step"] for e in taken) == sorted(fps)
        assert all("run r-dead" in e.message for e in taken)
        assert list(s.scalars(select(StepLease))) == []


def _load(path: Path):  # type: ignore[no-untyped-def]
    from cairn.workflow import load_workflow

    return load_workflow(path)
