"""The dashboard at scale: the runs list over 10,000 runs, and an artifact page whose lineage holds
1,000 artifacts (targets: the list stays fast whatever the number of runs; the lineage page
renders in at most 2 s).

A SQLite deployment is filled directly (10,000 runs of 5 steps; a lineage of 800 raw files → 150
datasets → 40 mixes → 9 models in a chain → 1 release) and each page is fetched through the
app in-process (`--no-auth`), so the figures are the server's own work. The peer is the JSON
API's answer for the same data (`/api/runs`, `/api/lineage`): what a page costs on top of it.
Each figure is the median of `--rounds`.

    .venv/bin/python bench/dashboard.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

RUNS, STEPS = 10_000, 5
WF = "name: wf\nsteps:\n" + "".join(
    f"  s{i}: {{kind: toy, inputs: {{x: {'./d' if i == 0 else f's{i - 1}.out'}}}}}\n"
    for i in range(STEPS)
)


def fill(client) -> str:  # type: ignore[no-untyped-def]
    """10,000 runs and a 1,000-artifact lineage; returns the release's digest."""
    from cairn.db.models import ArtifactRow, LineageEdge, Run, StepRun

    rng = random.Random(0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    states = ["succeeded"] * 8 + ["failed", "cancelled"]
    runs, steps = [], []
    for i in range(RUNS):
        at = start + timedelta(minutes=i)
        runs.append(
            dict(id=f"r-{i:06d}", workflow_name=f"wf-{i % 10}", workflow_path="/wf.yaml",
                 workflow_text=WF, workflow_digest="0" * 64, state=states[i % 10], created_at=at,
                 started_at=at, finished_at=at + timedelta(seconds=90), owner=f"user{i % 7}")
        )  # fmt: skip
        for k in range(STEPS):
            steps.append(
                dict(run_id=f"r-{i:06d}", step=f"s{k}", kind="toy", attempt=1,
                     state="cached" if k < 2 else "succeeded", config={}, resources={})
            )  # fmt: skip
    with client.engine.sessions.begin() as s:
        s.execute(insert(Run), runs)
        s.execute(insert(StepRun), steps)
    with client.engine.sessions.begin() as s:
        maker = s.query(StepRun).filter_by(run_id="r-000000", step="s4").one().id

    def digest(name: str) -> str:
        return hashlib.sha256(name.encode()).hexdigest()

    # Each layer feeds the next: every artifact has a child (all 1,000 are the release's
    # ancestors), and each child reads a few more at random (crossing edges, as in real data).
    layers = [
        ("raw", [digest(f"raw{i}") for i in range(800)]),
        ("dataset", [digest(f"data{i}") for i in range(150)]),
        ("dataset", [digest(f"mix{i}") for i in range(40)]),
    ]
    arts = [_artifact(d, kind, None if kind == "raw" else maker) for kind, ds in layers for d in ds]
    edges: list[dict] = []  # type: ignore[type-arg]

    def link(parents: list[str], child: str, slot: str = "in") -> None:
        edges.extend(
            dict(parent_digest=p, child_digest=child, step_run_id=maker, slot=slot)
            for p in dict.fromkeys(parents)
        )

    for (_, below), (_, above) in zip(layers, layers[1:], strict=False):
        for i, child in enumerate(above):
            own = below[i :: len(above)]
            link(own + rng.sample(below, 2), child)
    previous: list[str] = []
    for i in range(9):
        model = digest(f"model{i}")
        arts.append(_artifact(model, "model", maker))
        link(layers[2][1][i::9] + rng.sample(layers[2][1], 2) + previous, model)
        previous = [model]
    release = digest("release")
    arts.append(_artifact(release, "release", maker))
    link(previous, release, "model")
    with client.engine.sessions.begin() as s:
        s.execute(insert(ArtifactRow), arts)
        s.execute(insert(LineageEdge), edges)
    assert len(arts) == 1000, len(arts)
    return release


def _artifact(digest: str, type_: str, step_run_id: int | None) -> dict:  # type: ignore[type-arg]
    files = [{"path": "part-0", "sha256": digest, "size": 1}]
    return dict(digest=digest, type=type_, uri=f"/store/{type_}/{digest[:8]}", size_bytes=1,
                file_count=1, step_run_id=step_run_id, manifest={"type": type_, "files": files})  # fmt: skip


def timed(http, path: str, rounds: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    times, size = [], 0
    for _ in range(rounds):
        t = time.perf_counter()
        r = http.get(path)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        size = len(r.content)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from cairn.client import Client
    from cairn.server import create_app
    from cairn.server.dashboard.artifacts import lineage_svg
    from cairn.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        client = Client(Settings.from_env(Path(tmp) / "home"))
        t = time.perf_counter()
        release = fill(client)
        filled = time.perf_counter() - t
        http = TestClient(create_app(client, auth=False))
        rows = []
        for label, page, peer in [
            ("runs list, newest 50", "/ui/runs", "/api/runs?limit=50"),
            ("runs list, offset 9,950", "/ui/runs?offset=9950", "/api/runs?limit=50&offset=9950"),
            ("runs list, state=failed", "/ui/runs?state=failed", "/api/runs?limit=50&state=failed"),
            ("runs list, workflow + owner", "/ui/runs?workflow=wf-3&owner=user2",
             "/api/runs?limit=50&workflow=wf-3&owner=user2"),
            ("artifact page, 1,000-artifact lineage", f"/ui/artifacts/{release}",
             f"/api/lineage/{release}"),
        ]:  # fmt: skip
            seconds, size = timed(http, page, args.rounds)
            api, _ = timed(http, peer, args.rounds)
            rows.append({"page": label, "seconds": seconds, "bytes": size, "api_seconds": api})
        graph = client.lineage_graph(release)
        t = time.perf_counter()
        for _ in range(args.rounds):
            svg = lineage_svg(graph, "bench")
        layout_s = (time.perf_counter() - t) / args.rounds
    if args.json:
        print(json.dumps({"filled_s": filled, "rows": rows, "lineage_svg_s": layout_s}))
        return
    print(f"filled {RUNS:,} runs and a 1,000-artifact lineage in {filled:.1f} s\n")
    print("| page | dashboard | JSON API (same data) | page size |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['page']} | {r['seconds'] * 1000:.0f} ms | {r['api_seconds'] * 1000:.0f} ms "
              f"| {r['bytes'] / 1024:.0f} KB |")  # fmt: skip
    print(f"\nlayout + SVG of the 1,000-artifact lineage alone: {layout_s * 1000:.0f} ms "
          f"({len(svg) / 1024:.0f} KB)")  # fmt: skip


if __name__ == "__main__":
    main()
