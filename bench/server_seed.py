"""A team's worth of history for bench/server.py: Cairn's database at 10,000 runs and 100,000 step
runs, and the peer's, MLflow's tracking store at 10,000 runs, both on PostgreSQL.

Cairn's rows go in through its own models (SQLAlchemy Core bulk inserts into the tables the
migrations made): runs of a ten-step lifecycle workflow (the quickstart's text, as recorded) over
90 days, mostly succeeded with cache hits, some failed (a failed step, the rest skipped),
cancelled, running and pending; every computed step seals an artifact, which its next step reads
(links, lineage edges); an event for each run and step run. Apart from those, one sweep run made a lineage
graph of exactly 1,000 artifacts: 40 raw sources, 24 layers of ~40 artifacts each reading 1-4 of
the layer below (fan-in) and now and then one further down, and a release reading the last layer.
Retried attempts (a failed attempt 1 before the succeeded one) bring the step runs to exactly
the target.

MLflow's runs go in as MLflow writes them: its SqlAlchemyStore's `create_run`, `log_batch` (the
params, metrics and tags Cairn's mirror logs) and `update_run_info`, from a few threads; that is
as fast as MLflow's store allows, and the bench reports how long it took.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, insert, text

from cairn.db import make_engine, upgrade
from cairn.db.models import ArtifactRow, Event, LineageEdge, Run, StepRun, StepRunArtifact

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAYS = 90
WORKFLOWS = [f"team-{i:02d}" for i in range(20)]
# The lifecycle every seeded run goes through: (step, kind, output type, median seconds).
STEPS = [
    ("corpus", "curate", "dataset", 300),
    ("code", "curate", "dataset", 200),
    ("model", "pretrain", "model", 4 * 3600),
    ("chat", "sft", "model", 1800),
    ("aligned", "dpo", "model", 1200),
    ("scores", "evaluate", "eval_report", 240),
    ("safety", "evaluate", "eval_report", 180),
    ("base_scores", "evaluate", "eval_report", 240),
    ("endpoint", "serve", "endpoint", 60),
    ("publish", "release", "release", 30),
]
RUN_STATES = {"succeeded": 0.85, "failed": 0.08, "cancelled": 0.03, "running": 0.02}


def digest(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


@dataclass
class Seeded:
    runs: int
    step_runs: int
    artifacts: int
    lineage_edges: int
    events: int
    lineage_root: str
    lineage_nodes: int
    lineage_graph_edges: int
    seconds: float


class Rows:
    """Rows per table, in insertion order (foreign keys point backwards)."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.artifacts: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.edges: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def step(self, run_id: str, **kw: Any) -> int:
        sid = len(self.steps) + 1
        self.steps.append({"id": sid, "run_id": run_id, "attempt": 1, **kw})
        return sid

    def artifact(self, d: str, type_: str, producer: int | None, size: int) -> None:
        files = [{"path": f"part-{i}", "sha256": digest(d, i), "size": size // 3} for i in range(3)]
        self.artifacts.append(
            {
                "digest": d,
                "type": type_,
                "uri": f"s3://cairn-store/{type_}/{d[:16]}",
                "fingerprint": digest("fp", d),
                "output_name": type_,
                "step_run_id": producer,
                "size_bytes": size,
                "file_count": len(files),
                "manifest": {"type": type_, "files": files, "metadata": {}},
            }
        )


def build(runs: int, step_runs: int, lineage: int, rng: random.Random) -> tuple[Rows, str, int]:
    """Every row, the lineage graph's root and its number of edges."""
    rows = Rows()
    workflow_text = (REPO / "workflows" / "quickstart.yaml").read_text()
    sources = {w: digest("source", w) for w in WORKFLOWS}
    for d in sources.values():
        rows.artifact(d, "raw", None, 50_000_000)
    # The newest runs are the unfinished ones; the rest are shuffled.
    n_open = max(2, runs * 4 // 100)
    ended = [s for s, p in RUN_STATES.items() for _ in range(round(p * runs)) if s != "running"]
    ended = (ended + ["succeeded"] * runs)[: runs - n_open]
    rng.shuffle(ended)
    states = ended + ["running"] * (n_open // 2) + ["pending"] * (n_open - n_open // 2)
    latest: dict[tuple[str, str], str] = {}  # (workflow, step) → its newest output's digest
    computed: list[tuple[str, int]] = []  # (run, step run) that succeeded: where retries go
    sweep = ""
    for i, state in enumerate(states):
        run_id = f"r-bench-{i:05d}"
        workflow = WORKFLOWS[i % len(WORKFLOWS)]
        created = NOW - timedelta(seconds=(runs - i) * DAYS * 86400 / runs)
        queued = min(rng.lognormvariate(0, 1.5), 3600)
        started = None if state == "pending" else created + timedelta(seconds=queued)
        run = {
            "id": run_id,
            "workflow_name": workflow,
            "workflow_path": f"/teams/{workflow}/lifecycle.yaml",
            "workflow_text": workflow_text,
            "workflow_digest": digest("wf", workflow),
            "state": state,
            "created_at": created,
            "started_at": started,
            "owner": f"user{i % 37}",
        }
        rows.runs.append(run)
        if i == len(states) // 2:  # one sweep, mid-history, made the big lineage graph
            sweep = run_id
            run["state"], run["workflow_name"] = "succeeded", "sweep"
            continue
        if started is None:
            continue
        t = started
        upstream = sources[workflow]
        stop = rng.randrange(len(STEPS)) if state != "succeeded" else len(STEPS)
        for j, (step, kind, type_, median) in enumerate(STEPS):
            base = {"step": step, "kind": kind, "created_at": t, "fingerprint": digest(run_id, j)}
            base |= {"config": {"seed": j}, "resources": {"num_workers": 1}}
            if j > stop:
                if state == "running":
                    break  # not started yet
                # Skipped after the failure: recorded, never started, no fingerprint.
                rows.step(run_id, **base | {"fingerprint": None}, state="cancelled", finished_at=t)
                continue
            if j == stop:
                ending = "running" if state == "running" else state
                sid = rows.step(run_id, **base, state=ending, started_at=t)
                if ending != "running":
                    t += timedelta(seconds=rng.lognormvariate(0, 1) * median / 2)
                    rows.steps[-1]["finished_at"] = t
                rows.links.append({"step_run_id": sid, "artifact_digest": upstream})
                continue
            hit = (workflow, step) in latest and rng.random() < 0.4
            seconds = 0.0 if hit else rng.lognormvariate(0, 0.6) * median
            sid = rows.step(
                run_id,
                **base,
                state="cached" if hit else "succeeded",
                started_at=t,
                finished_at=t + timedelta(seconds=seconds),
            )
            t += timedelta(seconds=seconds)
            out = latest[(workflow, step)] if hit else digest(run_id, step)
            if not hit:
                rows.artifact(out, type_, sid, int(rng.lognormvariate(17, 2)))
                rows.edges.append(
                    {"parent_digest": upstream, "child_digest": out, "step_run_id": sid}
                )
                computed.append((run_id, sid))
            rows.links.append({"step_run_id": sid, "artifact_digest": upstream, "role": "input"})
            rows.links.append({"step_run_id": sid, "artifact_digest": out, "role": "output"})
            latest[(workflow, step)] = upstream = out
        if state != "running":
            run["finished_at"] = t
    before = len(rows.edges)
    root = graph(rows, sweep, lineage, rng)
    graph_edges = len(rows.edges) - before
    retries(rows, computed, step_runs - len(rows.steps), rng)
    for r in rows.runs:
        rows.events.append({"run_id": r["id"], "type": "run_created", "message": "created"})
    for sr in rows.steps:
        rows.events.append(
            {
                "run_id": sr["run_id"],
                "step_run_id": sr["id"],
                "type": f"step_{sr['state']}",
                "message": f"{sr['step']}: attempt {sr['attempt']} {sr['state']}",
                "data": {"step": sr["step"], "attempt": sr["attempt"]},
            }
        )
    for link in rows.links:
        link.setdefault("role", "input")
        link.setdefault("name", "in" if link["role"] == "input" else "out")
    for edge in rows.edges:
        edge.setdefault("slot", "in")
    return rows, root, graph_edges


def graph(rows: Rows, run_id: str, size: int, rng: random.Random) -> str:
    """A DAG of `size` artifacts made by `run_id`'s step runs; returns its root (a release)."""
    width, n_sources = 40, 40
    layers = [[digest("dag-src", j) for j in range(n_sources)]]
    for d in layers[0]:
        rows.artifact(d, "raw", None, 10_000_000)
    left = size - n_sources - 1
    first = left % width or width
    sizes = [first] + [width] * ((left - first) // width)
    t = NOW - timedelta(days=DAYS // 2)
    for k, n in enumerate(sizes, start=1):
        below, layer = layers[-1], []
        type_ = ("dataset", "model", "checkpoint", "eval_report")[k % 4]
        for j in range(n):
            parents = {below[j % len(below)]}  # every artifact below is someone's parent
            if k == 1:
                parents.add(below[(j + 1) % len(below)])  # 39 datasets over 40 sources
            parents |= set(rng.sample(below, rng.randint(0, 2)))
            if k > 2 and rng.random() < 0.2:  # a skip connection: an older artifact
                parents.add(rng.choice(layers[rng.randrange(k - 1)]))
            layer.append(made(rows, run_id, f"n{k}-{j}", type_, sorted(parents), t))
        layers.append(layer)
    return made(rows, run_id, "release", "release", layers[-1], t)


def made(rows: Rows, run_id: str, step: str, type_: str, parents: list[str], t: datetime) -> str:
    """One artifact of the sweep, its producing step run and its edges from `parents`."""
    sid = rows.step(
        run_id,
        step=step,
        kind="release" if type_ == "release" else "curate",
        state="succeeded",
        fingerprint=digest("sweep", step),
        created_at=t,
        started_at=t,
        finished_at=t + timedelta(seconds=5),
        config={},
        resources={},
    )
    d = digest("sweep", step)
    rows.artifact(d, type_, sid, 1_000_000)
    for slot, p in enumerate(parents):
        rows.edges.append(
            {"parent_digest": p, "child_digest": d, "step_run_id": sid, "slot": f"in{slot}"}
        )
        rows.links.append({"step_run_id": sid, "artifact_digest": p, "role": "input"})
    rows.links.append({"step_run_id": sid, "artifact_digest": d, "role": "output"})
    return d


def retries(rows: Rows, computed: list[tuple[str, int]], n: int, rng: random.Random) -> None:
    """`n` step runs more: a failed attempt before a succeeded one (which becomes attempt 2)."""
    for run_id, sid in rng.sample(computed, n):
        ok = rows.steps[sid - 1]
        ok["attempt"] = 2
        failed = {k: v for k, v in ok.items() if k not in ("id", "run_id", "attempt")}
        rows.step(run_id, **failed | {"state": "failed", "finished_at": ok["started_at"]})


def chunks(items: list[dict[str, Any]], n: int = 5000) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def seed_cairn(url: str, runs: int, step_runs: int, lineage: int) -> Seeded:
    start = time.perf_counter()
    rows, root, graph_edges = build(runs, step_runs, lineage, random.Random(0))
    assert len(rows.steps) == step_runs, len(rows.steps)
    upgrade(url)
    engine = make_engine(url)
    tables: list[tuple[Table, list[dict[str, Any]]]] = [
        (Run.__table__, rows.runs),  # type: ignore[list-item]
        (StepRun.__table__, rows.steps),  # type: ignore[list-item]
        (ArtifactRow.__table__, rows.artifacts),  # type: ignore[list-item]
        (StepRunArtifact.__table__, rows.links),  # type: ignore[list-item]
        (LineageEdge.__table__, rows.edges),  # type: ignore[list-item]
        (Event.__table__, rows.events),  # type: ignore[list-item]
    ]
    with engine.begin() as conn:
        for table, items in tables:
            insert_all(conn, table, items)
        # Explicit ids leave the sequence behind; a long-lived database is also analysed.
        conn.execute(text("SELECT setval('step_runs_id_seq', (SELECT max(id) FROM step_runs))"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return Seeded(
        runs=len(rows.runs),
        step_runs=len(rows.steps),
        artifacts=len(rows.artifacts),
        lineage_edges=len(rows.edges),
        events=len(rows.events),
        lineage_root=root,
        lineage_nodes=lineage,
        lineage_graph_edges=graph_edges,
        seconds=time.perf_counter() - start,
    )


def insert_all(conn: Connection, table: Table, items: list[dict[str, Any]]) -> None:
    """Bulk inserts, rows with the same keys together: Core fills the other columns' defaults
    (an explicit None would not be replaced by them)."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in items:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for same in shapes.values():
        for batch in chunks(same):
            conn.execute(insert(table), batch)


def seed_mlflow(uri: str, runs: int, artifacts: Path, threads: int = 4) -> tuple[str, float]:
    """(experiment id, seconds) after `runs` runs written through MLflow's own store."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    start = time.perf_counter()
    store = SqlAlchemyStore(uri, str(artifacts))
    experiment = store.create_experiment("cairn-bench")
    rng = random.Random(0)
    failed = set(rng.sample(range(runs), runs * 8 // 100))

    def one(i: int) -> None:
        t = int((NOW - timedelta(seconds=(runs - i) * DAYS * 86400 / runs)).timestamp() * 1000)
        workflow = WORKFLOWS[i % len(WORKFLOWS)]
        run = store.create_run(
            experiment, "bench", t, [RunTag("cairn.workflow", workflow)], f"r-bench-{i:05d}"
        )
        rid = run.info.run_id
        store.log_batch(
            rid,
            metrics=[Metric("loss", 2.5 - i / runs, t, 100), Metric("eval_loss", 2.7, t, 100)],
            params=[Param("workflow", workflow), Param("lr", "0.003"), Param("seq_len", "64")],
            tags=[RunTag("cairn.run_id", f"r-bench-{i:05d}"), RunTag("cairn.owner", "bench")],
        )
        status = RunStatus.FAILED if i in failed else RunStatus.FINISHED
        store.update_run_info(rid, status, t + 3_600_000, None)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(runs)))
    store.engine.dispose()
    return experiment, time.perf_counter() - start
