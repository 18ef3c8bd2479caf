"""Prometheus scrapes a real `cairn server`: Debian's prometheus, with a viewer token from a
credentials file, reads Cairn's metrics over the trail's home, and its query API answers what
Cairn's database says — including an audit made through the server's release route a moment
before. Every query of dashboards/cairn.json then runs on that Prometheus without an error.

Both processes are this test's own, stopped in a `finally`; Prometheus keeps its data in tmp.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests import REPO

from .conftest import Trail, free_port, settings_for
from .servers import cairn_server, stop, token

pytestmark = [pytest.mark.ray, pytest.mark.slow]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.25)
    raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")


@contextmanager
def process(args: list[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A process of this test's, its output in `log`; terminated (then killed) at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kw)
        try:
            yield proc
        finally:
            stop(proc)


def answering(url: str) -> bool | None:
    try:
        return httpx.get(url, timeout=1).status_code == 200 or None
    except httpx.HTTPError:
        return None


def test_prometheus_reads_cairn_metrics_from_a_running_server(trail: Trail, tmp_path: Path):
    if not Path(PROMETHEUS).exists():
        pytest.skip(
            f"no Prometheus at {PROMETHEUS}: install Debian's (`apt-get install prometheus`) to "
            "test that it scrapes `cairn server`"
        )
    env = trail.env()
    viewer_token = token(env, f"prometheus-{uuid.uuid4().hex[:8]}", "viewer")
    (tmp_path / "token").write_text(viewer_token)
    port, prom_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: cairn\n"
        f"    authorization: {{credentials_file: {tmp_path / 'token'}}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    server = f"http://127.0.0.1:{port}"
    prom = f"http://127.0.0.1:{prom_port}"

    def query(promql: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{prom}/api/v1/query", params={"query": promql}, timeout=5).json()
        assert r["status"] == "success", f"{promql}: {r}"
        return r["data"]["result"]  # type: ignore[no-any-return]

    def scraped(promql: str, expected: float) -> float | None:
        found = query(promql)
        return (
            float(found[0]["value"][1])
            if found and float(found[0]["value"][1]) == expected
            else None
        )

    prometheus = [
        PROMETHEUS,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]
    with cairn_server(env, port=port) as cairn, process(prometheus, tmp_path / "prometheus.log"):
        wait_for("prometheus", lambda: answering(f"{prom}/-/ready"))
        # An audit through the server's release route, which /metrics must count.
        viewer = {"Authorization": f"Bearer {viewer_token}"}
        release = trail.result.steps["publish"].artifacts["release"].digest
        r = httpx.get(f"{server}/api/releases/{release}?audit=true", headers=viewer, timeout=60)
        assert r.status_code == 200 and r.json()["audit"]["ok"], r.text

        from cairn.client import Client

        stats = Client(settings_for(trail.home)).stats()
        succeeded, audits_ok = stats.runs["succeeded"], stats.audits[True]
        assert succeeded >= 1 and audits_ok >= 1
        try:
            wait_for(
                "cairn_runs in Prometheus",
                lambda: scraped('cairn_runs{state="succeeded"}', succeeded),
            )
            wait_for(
                "the audit in Prometheus",
                lambda: scraped('cairn_release_audits_total{result="ok"}', audits_ok),
            )
        except AssertionError:
            targets = httpx.get(f"{prom}/api/v1/targets", timeout=5).json()
            health = [(t["health"], t["lastError"]) for t in targets["data"]["activeTargets"]]
            raise AssertionError(f"Prometheus's view of the server: {health}") from None
        assert query('up{job="cairn"}')[0]["value"][1] == "1"
        step_kinds = {r["metric"]["kind"] for r in query("cairn_step_runs")}
        assert {"curate", "pretrain", "release"} <= step_kinds

        # Every query of the Cairn dashboard is PromQL this Prometheus accepts.
        dashboard = json.loads((REPO / "dashboards" / "cairn.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$window", "1h").replace("$kind", ".*")
                query(expr)  # asserts "success"
    assert "Traceback" not in cairn.proc.stderr.read()
