"""/metrics on the toy deployment: Prometheus's text format, with the values Cairn's database
holds — runs and step runs by state, a cache hit after a re-run, the bytes the steps wrote, and
audits made through the deployment (by `Client`, `cairn run --audit` and the server's release
route)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from cairn.cli.runs import recorded_audit
from cairn.db.models import ArtifactRow, Event
from cairn.workflow import load_workflow
from tests.unit.server.conftest import Deployment


def scrape(deployment: Deployment) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of one scrape, as a viewer."""
    r = deployment.http.get("/metrics", headers=deployment.as_("viewer"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]  # type: ignore[no-any-return]


def test_runs_steps_and_the_cache_as_the_database_has_them(deployment: Deployment) -> None:
    m = scrape(deployment)
    assert value(m, "cairn_runs", state="succeeded") == 1
    assert value(m, "cairn_runs", state="failed") == 0
    for kind in ("toy_count", "toy_fit"):
        assert value(m, "cairn_step_runs", kind=kind, state="succeeded") == 1
        assert value(m, "cairn_cache_misses_total", kind=kind) == 1
        assert value(m, "cairn_cache_hits_total", kind=kind) == 0

    again = deployment.client.run(load_workflow(deployment.workflow))
    assert {s.state for s in again.steps.values()} == {"cached"}
    m = scrape(deployment)
    assert value(m, "cairn_runs", state="succeeded") == 2
    for kind in ("toy_count", "toy_fit"):
        assert value(m, "cairn_step_runs", kind=kind, state="cached") == 1
        assert value(m, "cairn_cache_hits_total", kind=kind) == 1
        assert value(m, "cairn_cache_misses_total", kind=kind) == 1  # the hit computed nothing
        # A cache hit takes no time: only the first run's attempt has a duration.
        assert value(m, "cairn_step_duration_seconds_count", kind=kind, state="succeeded") == 1
    assert value(m, "cairn_run_queue_seconds_count") == 2


def test_durations_are_the_steps_own(deployment: Deployment) -> None:
    m = scrape(deployment)
    status = deployment.client.status(deployment.run.run_id)
    for attempt in status.steps:
        labels = {"kind": attempt.kind, "state": "succeeded"}
        total = value(m, "cairn_step_duration_seconds_sum", **labels)
        assert attempt.seconds is not None and abs(total - attempt.seconds) < 0.01
        buckets = sorted(
            (float(dict(k)["le"]), v)
            for (name, k), v in m.items()
            if name == "cairn_step_duration_seconds_bucket" and dict(k)["kind"] == attempt.kind
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and counts[-1] == 1  # cumulative, +Inf holds it
        assert all(v == (total <= le) for le, v in buckets)


def test_bytes_written_are_the_artifacts_the_steps_sealed(deployment: Deployment) -> None:
    with deployment.client.engine.sessions() as s:
        made = s.execute(
            select(ArtifactRow.type, ArtifactRow.size_bytes).where(
                ArtifactRow.step_run_id.isnot(None)
            )
        ).all()
    assert {t for t, _ in made} == {"dataset", "model"}
    m = scrape(deployment)
    for type_ in ("dataset", "model"):
        expected = sum(n for t, n in made if t == type_)
        assert expected > 0
        assert value(m, "cairn_store_written_bytes_total", type=type_) == expected
    # The source the run read was digested where it lies: nothing written for it.
    assert not any(n == "cairn_store_written_bytes_total" and ("type", "raw") in k for n, k in m)


def test_audits_through_the_deployment_are_recorded_and_counted(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = deployment.client
    model = deployment.run.steps["fit"].artifacts["model"]
    assert client.audit_release(model.uri, load_model=False, by="ci").ok

    # `cairn run --audit` records its audits in the deployment it ran in (CAIRN_HOME here).
    tampered = tmp_path / "tampered"
    shutil.copytree(model.uri, tampered)
    victim = next(p for p in tampered.rglob("*") if p.is_file() and p.name != "manifest.json")
    victim.write_bytes(victim.read_bytes() + b"!")
    for var in ("CAIRN_SERVER", "CAIRN_DATABASE_URL", "MLFLOW_TRACKING_URI", "CAIRN_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CAIRN_HOME", str(client.settings.home))
    assert not recorded_audit(str(tampered)).ok

    # The server's release route audits too; a release row over the model's folder (audited as
    # a plain artifact) stands in for a release bundle.
    with client.engine.sessions.begin() as s:
        s.add(ArtifactRow(digest="f" * 64, type="release", uri=model.uri, manifest={}))
    viewer = deployment.as_("viewer")
    r = deployment.http.get(f"/api/releases/{'f' * 12}", headers=viewer)
    # A view shows the newest recorded audit (ci's, above) and records nothing new ...
    assert r.status_code == 200 and r.json()["audit"]["ok"] and r.json()["audited_at"]
    # ... while asking for one audits again, recorded with who asked.
    r = deployment.http.get(f"/api/releases/{'f' * 12}?audit=true", headers=viewer)
    assert r.status_code == 200 and r.json()["audit"]["ok"]

    m = scrape(deployment)
    assert value(m, "cairn_release_audits_total", result="ok") == 2
    assert value(m, "cairn_release_audits_total", result="failed") == 1
    with client.engine.sessions() as s:
        events = s.scalars(select(Event).where(Event.type == "release_audited")).all()
    assert [(e.data["by"], e.data["ok"], e.run_id) for e in events] == [
        ("ci", True, None),
        (events[1].data["by"], False, None),
        ("viewer", True, None),
    ]
    assert "@" in events[1].data["by"]  # the command line's user@host
    assert events[1].data["failed"] and "failed" in events[1].message
    assert events[1].data["bundle"] == str(tampered)


def test_the_process_wide_registry_is_left_alone(deployment: Deployment) -> None:
    # Cairn's collector lives on a registry of its own: whatever else the process exports
    # (Ray's, a library's) stays out of /metrics, and Cairn's numbers stay out of theirs.
    from prometheus_client import REGISTRY, Counter, generate_latest

    assert ("cairn_runs", frozenset({("state", "succeeded")})) in scrape(deployment)
    assert b"cairn_" not in generate_latest(REGISTRY)
    stray = Counter("stray_requests", "a metric some library registered globally")
    try:
        stray.inc()
        assert not any(name.startswith("stray") for name, _ in scrape(deployment))
    finally:
        REGISTRY.unregister(stray)
