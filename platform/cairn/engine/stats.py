"""The deployment in numbers, for /metrics: runs and step runs by state, step durations and run
queue times as histograms, cache hits and misses, bytes written to the store, release audits.

`cairn server` keeps no state, so every scrape asks the database: four GROUP BY queries, one scan
of runs, step runs and artifacts each and an indexed look at the events, with the histograms'
buckets summed by the database, never rows loaded into Python (bench/server.py measures a scrape
at 100,000 step runs). Durations are computed in SQL on both back ends Cairn supports
(`seconds_between`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Float, case, func, select
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from cairn.db.models import ArtifactRow, Event, Run, StepRun

RUN_STATES = ("pending", "running", "succeeded", "failed", "cancelled")
# A step run that did its work (or tried to): what its duration measures. A cache hit takes no
# time and would drag every percentile of its kind to zero.
COMPUTED = ("succeeded", "failed", "cancelled")
# Upper bounds in seconds. Steps run from a second (a tiny curate) to a day (pretraining); a run
# waits from milliseconds (a local run) to hours (a cluster scaling up for it).
STEP_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 43200.0, 86400.0)
QUEUE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
AUDITED = "release_audited"  # the event an audit through a deployment leaves (Client.audit_release)


@dataclass
class Histogram:
    """Observations counted under each upper bound (cumulative, as Prometheus wants them)."""

    bounds: tuple[float, ...]
    below: list[int]  # below[i]: observations ≤ bounds[i]
    count: int = 0
    total: float = 0.0


@dataclass
class Stats:
    """What /metrics exports, read in one pass over the database."""

    runs: dict[str, int]  # state → runs
    step_runs: dict[tuple[str, str], int]  # (kind, state) → step runs
    cache_hits: dict[str, int]  # kind → step runs that reused a verified artifact
    cache_misses: dict[str, int]  # kind → steps that looked the cache up and computed instead
    step_seconds: dict[tuple[str, str], Histogram]  # (kind, state) → started → finished
    run_queue_seconds: Histogram  # created → started, over the runs that have started
    written_bytes: dict[str, int]  # artifact type → bytes of the artifacts steps produced
    audits: dict[bool, int] = field(default_factory=dict)  # ok → audits of release bundles


class seconds_between(FunctionElement[float]):  # noqa: N801  (used like a SQL function)
    """`seconds_between(a, b)`: seconds from timestamp `a` to `b`, in SQL. SQLite keeps
    timestamps as text (julianday parses them); PostgreSQL subtracts them into an interval."""

    type = Float()
    name = "seconds_between"
    inherit_cache = True


@compiles(seconds_between, "sqlite")
def _seconds_sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


@compiles(seconds_between, "postgresql")
def _seconds_postgresql(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    # date_part is a double; EXTRACT a numeric, whose comparisons made a scrape ~1.5x slower.
    return f"date_part('epoch', {end} - {start})"


@compiles(seconds_between)
def _seconds_other(element: seconds_between, compiler: Any, **kw: Any) -> str:
    raise CompileError(
        f"Cairn's metrics compute durations on SQLite and PostgreSQL only, not "
        f"{compiler.dialect.name}: point CAIRN_DATABASE_URL at one of those"
    )


def histogram_columns(seconds: Any, bounds: tuple[float, ...]) -> list[Any]:
    """Aggregates of one histogram over `seconds` (NULL: not an observation): count, sum, and
    the count under each bound.

    `seconds` should be a column of a subquery with `.offset(0)`: without it the database
    inlines the subquery and computes the duration again for each bucket (3x the time of a
    scrape on PostgreSQL at 100,000 step runs)."""
    return [
        func.count(seconds),
        func.coalesce(func.sum(seconds), 0.0),
        *(func.sum(case((seconds <= b, 1), else_=0)) for b in bounds),
    ]


def histogram(bounds: tuple[float, ...], rows: list[Any]) -> Histogram:
    """The histogram of `histogram_columns`' values, summed over `rows` (groups of a GROUP BY)."""
    h = Histogram(bounds, [0] * len(bounds))
    for count, total, *below in rows:
        h.count += int(count or 0)
        h.total += float(total or 0)
        h.below = [a + int(b or 0) for a, b in zip(h.below, below, strict=True)]
    return h


def collect(s: Session) -> Stats:
    """The whole deployment's `Stats`: one scan of each table, aggregated by the database."""
    runs = dict.fromkeys(RUN_STATES, 0)
    wait = case((Run.started_at.isnot(None), seconds_between(Run.created_at, Run.started_at)))
    waits = select(Run.state, wait.label("d")).offset(0).subquery()
    queued = []
    for state, n, *hist in s.execute(
        select(waits.c.state, func.count(), *histogram_columns(waits.c.d, QUEUE_BUCKETS)).group_by(
            waits.c.state
        )
    ):
        runs[state] = n
        queued.append(hist)

    # A step run's duration, when it ran: a cache hit took no time and would drag every
    # percentile of its kind to zero; a running or skipped one has no end or no start.
    ran = StepRun.started_at.isnot(None) & StepRun.finished_at.isnot(None)
    ran &= StepRun.state.in_(COMPUTED)
    took = case((ran, seconds_between(StepRun.started_at, StepRun.finished_at)))
    # A retry is the same miss again, and a step that failed before its fingerprint (an
    # unreadable input, a skipped step) never looked the cache up.
    first = case(((StepRun.attempt == 1) & StepRun.fingerprint.isnot(None), 1), else_=0)
    steps = (
        select(StepRun.kind, StepRun.state, first.label("first"), took.label("d"))
        .offset(0)
        .subquery()
    )
    step_runs: dict[tuple[str, str], int] = {}
    hits: dict[str, int] = {}
    misses: dict[str, int] = {}
    durations: dict[tuple[str, str], Histogram] = {}
    for kind, state, n, looked_up, *hist in s.execute(
        select(
            steps.c.kind,
            steps.c.state,
            func.count(),
            func.sum(steps.c.first),
            *histogram_columns(steps.c.d, STEP_BUCKETS),
        ).group_by(steps.c.kind, steps.c.state)
    ):
        step_runs[(kind, state)] = n
        cached = state == "cached"
        hits[kind] = hits.get(kind, 0) + (n if cached else 0)
        misses[kind] = misses.get(kind, 0) + (0 if cached else int(looked_up or 0))
        if hist[0]:
            durations[(kind, state)] = histogram(STEP_BUCKETS, [hist])

    written = s.execute(
        select(ArtifactRow.type, func.sum(ArtifactRow.size_bytes))
        .where(ArtifactRow.step_run_id.isnot(None))
        .group_by(ArtifactRow.type)
    )
    ok = Event.data["ok"].as_boolean()
    # Audits are the deployment's events, not a run's: run_id IS NULL keeps this on the index.
    audits = {True: 0, False: 0}
    for passed, n in s.execute(
        select(ok, func.count()).where(Event.run_id.is_(None), Event.type == AUDITED).group_by(ok)
    ):
        audits[bool(passed)] += n
    return Stats(
        runs=runs,
        step_runs=step_runs,
        cache_hits=hits,
        cache_misses=misses,
        step_seconds=durations,
        run_queue_seconds=histogram(QUEUE_BUCKETS, queued),
        written_bytes={t: int(n or 0) for t, n in written},
        audits=audits,
    )


__all__ = ["AUDITED", "Histogram", "Stats", "collect", "seconds_between"]
