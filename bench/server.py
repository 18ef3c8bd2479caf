"""`cairn server` at team scale (issue 14): the runs list, lineage and /metrics over HTTP, with
10,000 runs and 100,000 step runs in PostgreSQL, against MLflow's `search_runs` on 10,000 runs.

Targets: the runs list API answers in ≤ 100 ms (p95) and its page renders in ≤ 1 s; a lineage
graph of 1,000 artifacts renders in ≤ 2 s.

1. Seeds a fresh database `cairn_bench_<pid>` on the PostgreSQL server at 127.0.0.1:5432 (user
   postgres, trust auth) through Cairn's models (bench/server_seed.py says what is in it).
2. The peer: MLflow's tracking store on its own database `mlflow_bench_<pid>`, 10,000 runs
   written through MLflow's store (timed and reported).
3. Starts a real `cairn server --no-auth` (uvicorn, one process) on loopback, and `mlflow server`
   (one worker) beside it, and times one request after another on kept-alive connections, the
   calls taking turns in blocks (so the machine's noise hits both alike): GET /api/runs?limit=50
   (newest, deep offsets, a state and a workflow filter) against MLflow's REST runs/search
   (newest 50, and status FAILED); then GET /api/lineage/ROOT (JSON and Mermaid) for the 1,000-artifact graph,
   GET /metrics (one scrape), and the dashboard's /ui/runs and /ui/artifacts/ROOT where they
   exist ("n/a" when they answer anything but 200). A page's time is the server's whole response
   (the HTML a browser then lays out).
4. In this process, no HTTP on either side, taking turns too: Cairn's `Client.runs(50)` against
   `MlflowClient.search_runs(max_results=50, order_by start_time)`.
Both databases are dropped at the end. Results: bench/results/server.json, and a table to paste
into bench/RESULTS.md. Without a reachable PostgreSQL it says so and exits 0.

    PYTHONPATH=platform .venv/bin/python bench/server.py [--runs 10000] [--repeats 100]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_seed import seed_cairn, seed_mlflow  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
RESULTS = Path(__file__).resolve().parent / "results" / "server.json"
TARGETS = {"runs_api_p95_ms": 100, "runs_page_s": 1.0, "lineage_1000_s": 2.0}


def timed(
    calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 3, block: int = 10
) -> dict[str, Any]:
    """p50, p95 and max in ms of each call, `repeats` times after `warmup` untimed rounds.

    The calls take turns, `block` at a time, so a busy moment of the machine slows them all
    alike. In blocks, not one by one: MLflow's server goes on working after it has answered,
    which slowed the next call (the other server's) by half on this machine of two cores; and
    a pause between calls instead would measure cold requests (2-3x slower here, /healthz
    1.3 → 4 ms, after 0.1 s idle)."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    ms: dict[str, list[float]] = {name: [] for name in calls}
    while any(len(times) < repeats for times in ms.values()):
        for name, call in calls.items():
            for _ in range(min(block, repeats - len(ms[name]))):
                t = time.perf_counter()
                call()
                ms[name].append((time.perf_counter() - t) * 1000)
    out = {}
    for name, times in ms.items():
        cuts = statistics.quantiles(times, n=100, method="inclusive")
        out[name] = {"p50": cuts[49], "p95": cuts[94], "max": max(times), "n": repeats}
    return out


@contextlib.contextmanager
def database(admin: Any, name: str) -> Iterator[str]:
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def server(args: list[str], health: str, env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    """A server process of ours, once `health` answers 200, and a client of it; stopped at the
    end."""
    base = health.rsplit("/", 1)[0]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(health, timeout=2).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{args[:4]} did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            with httpx.Client(base_url=base, timeout=120) as http:
                yield http
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def getter(http: httpx.Client, path: str) -> Callable[[], None]:
    def call() -> None:
        r = http.get(path)
        assert r.status_code == 200 and r.content, (path, r.status_code, r.text[:300])

    return call


def searcher(http: httpx.Client, experiment: str, filter_: str = "") -> Callable[[], None]:
    body = {
        "experiment_ids": [experiment],
        "filter": filter_,
        "max_results": 50,
        "order_by": ["attributes.start_time DESC"],
    }

    def call() -> None:
        r = http.post("/api/2.0/mlflow/runs/search", json=body)
        assert r.status_code == 200 and len(r.json()["runs"]) == 50, r.text[:300]

    return call


def measure_http(
    url: str, mlflow_uri: str, experiment: str, seeded: Any, repeats: int, tmp: Path
) -> dict[str, Any]:
    port, mlflow_port = free_port(), free_port()
    env = {**os.environ, "CAIRN_DATABASE_URL": url, "CAIRN_HOME": str(tmp / "cairn")}
    env.pop("CAIRN_SERVER", None)
    cairn = [sys.executable, "-m", "cairn", "server", "--no-auth", "--port", str(port)]
    mlflow = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow_uri]
    mlflow += ["--default-artifact-root", str(tmp / "mlartifacts"), "-h", "127.0.0.1"]
    mlflow += ["-p", str(mlflow_port), "-w", "1"]
    root = seeded.lineage_root
    with (
        server(cairn, f"http://127.0.0.1:{port}/healthz", env, tmp / "cairn.log") as http,
        server(
            mlflow, f"http://127.0.0.1:{mlflow_port}/health", {**os.environ}, tmp / "ml.log"
        ) as peer,
    ):
        runs = http.get("/api/runs", params={"limit": 50}).json()["runs"]
        assert len(runs) == 50 and all("cache_hits" in r for r in runs), runs[0]
        graph = http.get(f"/api/lineage/{root}").json()
        assert len(graph["nodes"]) == seeded.lineage_nodes, len(graph["nodes"])
        last = seeded.runs - 50
        out = timed(
            {
                "cairn runs newest 50": getter(http, "/api/runs?limit=50"),
                "cairn runs offset 5000": getter(http, "/api/runs?limit=50&offset=5000"),
                f"cairn runs offset {last}": getter(http, f"/api/runs?limit=50&offset={last}"),
                "cairn runs state=failed": getter(http, "/api/runs?limit=50&state=failed"),
                "cairn runs workflow=team-07": getter(http, "/api/runs?limit=50&workflow=team-07"),
                "mlflow runs/search newest 50": searcher(peer, experiment),
                "mlflow runs/search status=FAILED": searcher(
                    peer, experiment, "attributes.status = 'FAILED'"
                ),
            },
            repeats,
        )
        slow = max(10, repeats // 5)
        calls = {
            "cairn lineage json": getter(http, f"/api/lineage/{root}?format=json"),
            "cairn lineage mermaid": getter(http, f"/api/lineage/{root}?format=mermaid"),
            "cairn /metrics scrape": getter(http, "/metrics"),
        }
        pages = {"page /ui/runs": "/ui/runs", "page /ui/artifacts/ROOT": f"/ui/artifacts/{root}"}
        for name, path in pages.items():
            status = http.get(path).status_code
            if status == 200:
                calls[name] = getter(http, path)
            else:
                out[name] = f"n/a (HTTP {status})"
        out |= timed(calls, slow, block=2)
    return out


def measure_inprocess(
    url: str, mlflow_uri: str, experiment: str, repeats: int, tmp: Path
) -> dict[str, Any]:
    """Both libraries' own calls, in this process: no HTTP on either side."""
    from mlflow import MlflowClient

    import cairn
    from cairn.settings import Settings

    client = cairn.Client(dataclasses.replace(Settings.from_env(tmp / "c"), database_url=url))
    peer = MlflowClient(tracking_uri=mlflow_uri)
    newest = ["attributes.start_time DESC"]
    failed = "attributes.status = 'FAILED'"
    assert len(peer.search_runs([experiment], max_results=50, order_by=newest)) == 50
    return timed(
        {
            "cairn Client.runs(50)": lambda: client.runs(50),
            "mlflow search_runs(50)": lambda: peer.search_runs(
                [experiment], max_results=50, order_by=newest
            ),
            "cairn Client.runs(50, state=failed)": lambda: client.runs(50, state="failed"),
            "mlflow search_runs(50, status=FAILED)": lambda: peer.search_runs(
                [experiment], failed, max_results=50, order_by=newest
            ),
        },
        repeats,
    )


def machine() -> dict[str, Any]:
    import mlflow

    pg = create_engine(f"{PG}/postgres")
    with pg.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar()
    pg.dispose()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": version,
        "mlflow": mlflow.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--step-runs", type=int, default=100_000)
    ap.add_argument("--lineage", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--mlflow-threads", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    admin = create_engine(
        f"{PG}/postgres", isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # no server here: the bench cannot run, which is not a failure
        why = (str(e).splitlines() or [type(e).__name__])[0]
        print(f"bench/server.py: skipped, PostgreSQL is not reachable at {PG} ({why})")
        return
    result: dict[str, Any] = {"machine": machine(), "targets": TARGETS}
    pid = os.getpid()
    with (
        tempfile.TemporaryDirectory() as tmp,
        database(admin, f"cairn_bench_{pid}") as url,
        database(admin, f"mlflow_bench_{pid}") as mlflow_uri,
    ):
        print(f"seeding Cairn: {args.runs} runs, {args.step_runs} step runs ...", flush=True)
        seeded = seed_cairn(url, args.runs, args.step_runs, args.lineage)
        result["cairn_seed"] = seeded.__dict__
        print(f"  {seeded.__dict__}", flush=True)
        print(f"seeding MLflow: {args.runs} runs through its store ...", flush=True)
        experiment, seconds = seed_mlflow(
            mlflow_uri, args.runs, Path(tmp) / "mlruns", args.mlflow_threads
        )
        result["mlflow_seed"] = {
            "runs": args.runs,
            "seconds": seconds,
            "threads": args.mlflow_threads,
            "ms_per_run": seconds / args.runs * 1000,
        }
        print(f"  {result['mlflow_seed']}", flush=True)
        print("timing over HTTP, then in process ...", flush=True)
        result["http"] = measure_http(url, mlflow_uri, experiment, seeded, args.repeats, Path(tmp))
        result["in_process"] = measure_inprocess(
            url, mlflow_uri, experiment, args.repeats, Path(tmp)
        )
        result["load_average_at_end"] = os.getloadavg()
    admin.dispose()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report(result)
    print(f"\nresults: {args.out}")


def report(result: dict[str, Any]) -> None:
    def table(title: str, rows: dict[str, Any]) -> None:
        print(f"\n| {title} | p50 ms | p95 ms | max ms |\n|---|---|---|---|")
        for name, m in rows.items():
            if isinstance(m, str):
                print(f"| {name} | {m} | | |")
            else:
                print(f"| {name} | {m['p50']:.1f} | {m['p95']:.1f} | {m['max']:.1f} |")

    http, inproc = result["http"], result["in_process"]
    table("over HTTP, one request at a time", http)
    table("in process, no HTTP", inproc)
    for what, mine, peer in (
        ("newest 50 over HTTP", http["cairn runs newest 50"], http["mlflow runs/search newest 50"]),
        (
            "status failed over HTTP",
            http["cairn runs state=failed"],
            http["mlflow runs/search status=FAILED"],
        ),
        ("newest 50 in process", inproc["cairn Client.runs(50)"], inproc["mlflow search_runs(50)"]),
    ):
        print(
            f"{what}: Cairn p50/p95 {mine['p50']:.1f}/{mine['p95']:.1f} ms, MLflow "
            f"{peer['p50']:.1f}/{peer['p95']:.1f} ms (MLflow / Cairn at p95: "
            f"{peer['p95'] / mine['p95']:.1f}x)"
        )
    worst = max(m["p95"] for n, m in http.items() if n.startswith("cairn runs "))
    lineage = http["cairn lineage json"]["p95"] / 1000
    pages = {n: m for n, m in http.items() if n.startswith("page ")}
    shown = ", ".join(
        f"{n} {m}" if isinstance(m, str) else f"{n} p95 {m['p95'] / 1000:.2f} s"
        for n, m in pages.items()
    )
    print(
        f"targets: runs API p95 {worst:.1f} ms (≤ {TARGETS['runs_api_p95_ms']} ms); lineage of "
        f"1,000 artifacts p95 {lineage:.2f} s (≤ {TARGETS['lineage_1000_s']} s); pages "
        f"(≤ {TARGETS['runs_page_s']} s for the runs page): {shown}"
    )


if __name__ == "__main__":
    main()
