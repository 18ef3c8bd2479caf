"""`cairn.engine.stats` on SQLite and PostgreSQL: the durations and buckets the database computes
are exact, on rows with known timestamps (the two back ends store timestamps differently: text
and timestamptz)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cairn.db import sessions
from cairn.db.models import ArtifactRow, Event, Run, StepRun
from cairn.engine import stats

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def seed(url: str) -> None:
    def run(id_: str, state: str, queued: float | None) -> Run:
        return Run(
            id=id_,
            workflow_name="w",
            workflow_path="w.yaml",
            workflow_text="",
            workflow_digest="d",
            state=state,
            created_at=T0,
            started_at=at(queued) if queued is not None else None,
        )

    def step(id_: int, kind: str, state: str, took: float | None, **kw: object) -> StepRun:
        return StepRun(
            id=id_,
            run_id="r1",
            step=f"s{id_}",
            kind=kind,
            state=state,
            fingerprint=kw.pop("fingerprint", f"fp{id_}"),
            created_at=T0,
            started_at=T0 if took is not None else None,
            finished_at=at(took) if took is not None and state != "running" else None,
            **kw,
        )

    with sessions(url).begin() as s:
        s.add_all(
            [run("r1", "succeeded", 0.25), run("r2", "running", 20.0), run("r3", "pending", None)]
        )
        s.flush()
        s.add_all(
            [
                step(1, "curate", "succeeded", 0.5),
                step(2, "curate", "succeeded", 10.0),
                step(3, "pretrain", "failed", 7200.0),
                step(4, "pretrain", "succeeded", 7300.0, attempt=2),  # the retry: no new miss
                step(5, "curate", "cached", 0.0),
                step(6, "pretrain", "running", 3.0),
                step(7, "sft", "failed", None, fingerprint=None),  # unreadable input: no lookup
            ]
        )
        s.flush()
        for digest, type_, size, producer in (
            ("a" * 64, "dataset", 1000, 1),
            ("b" * 64, "dataset", 24, 2),
            ("c" * 64, "model", 5_000_000_000, 4),  # beyond 32 bits
            ("d" * 64, "raw", 777, None),  # a source: nothing wrote it to the store
        ):
            s.add(
                ArtifactRow(
                    digest=digest,
                    type=type_,
                    uri="/x",
                    manifest={},
                    size_bytes=size,
                    step_run_id=producer,
                )
            )
        for ok in (True, True, False):
            s.add(Event(type=stats.AUDITED, message="", data={"bundle": "/b", "ok": ok}))
        s.add(Event(type="token_created", message="", data={"ok": False}))


def test_stats_are_exact_on_both_back_ends(url: str) -> None:
    seed(url)
    with sessions(url)() as s:
        st = stats.collect(s)
    assert st.runs == {"pending": 1, "running": 1, "succeeded": 1, "failed": 0, "cancelled": 0}
    assert st.step_runs == {
        ("curate", "succeeded"): 2,
        ("curate", "cached"): 1,
        ("pretrain", "failed"): 1,
        ("pretrain", "succeeded"): 1,
        ("pretrain", "running"): 1,
        ("sft", "failed"): 1,
    }
    assert st.cache_hits == {"curate": 1, "pretrain": 0, "sft": 0}
    # curate: two computed; pretrain: the failed first attempt and the running one (the retry
    # is the same miss); sft never looked the cache up.
    assert st.cache_misses == {"curate": 2, "pretrain": 2, "sft": 0}

    curate = st.step_seconds[("curate", "succeeded")]
    bounds = stats.STEP_BUCKETS
    assert curate.count == 2 and abs(curate.total - 10.5) < 1e-3
    assert curate.below == [int(b >= 0.5) + int(b >= 10.0) for b in bounds]
    failed = st.step_seconds[("pretrain", "failed")]
    assert failed.below == [int(b >= 7200.0) for b in bounds] and abs(failed.total - 7200) < 1e-3
    # Cache hits and steps still running have no duration; neither has a step that never started.
    assert set(st.step_seconds) == {
        ("curate", "succeeded"),
        ("pretrain", "failed"),
        ("pretrain", "succeeded"),
    }

    queue = st.run_queue_seconds
    assert queue.count == 2 and abs(queue.total - 20.25) < 1e-3
    assert queue.below == [int(b >= 0.25) + int(b >= 20.0) for b in stats.QUEUE_BUCKETS]

    assert st.written_bytes == {"dataset": 1024, "model": 5_000_000_000}
    assert st.audits == {True: 2, False: 1}


def test_an_empty_database_has_zeros_not_gaps(url: str) -> None:
    with sessions(url)() as s:
        st = stats.collect(s)
    assert set(st.runs.values()) == {0} and st.step_runs == {} and st.written_bytes == {}
    assert st.run_queue_seconds.count == 0 and st.run_queue_seconds.below == [0] * len(
        stats.QUEUE_BUCKETS
    )
    assert st.audits == {True: 0, False: 0}
