"""The deployment in numbers, for /metrics: runs and step runs by state, step durations and run
queue times as histograms, cache hits and misses, bytes written to the store, release audits.

`cairn server` keeps no state, so every scrape asks the database. Each figure is one GROUP BY
query whose histogram buckets are summed by the database, never rows loaded into Python: a scrape
costs the same six queries at ten runs or at 100,000 step runs (bench/server.py measures it).
Durations are computed in SQL on both back ends Cairn supports (`seconds_between`).
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
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(seconds_between)
def _seconds_other(element: seconds_between, compiler: Any, **kw: Any) -> str:
    raise CompileError(
        f"Cairn's metrics compute durations on SQLite and PostgreSQL only, not "
        f"{compiler.dialect.name}: point CAIRN_DATABASE_URL at one of those"
    )


def histograms(
    s: Session, keys: list[Any], seconds: Any, where: list[Any], bounds: tuple[float, ...]
) -> dict[tuple[Any, ...], Histogram]:
    """One histogram per distinct `keys`, of `seconds` over the rows matching `where`, summed
    bucket by bucket in the database."""
    inner = select(*keys, seconds.label("d")).where(*where).subquery()
    d = inner.c.d
    groups = [inner.c[k.key] for k in keys]
    q = select(
        *groups,
        func.count(),
        func.coalesce(func.sum(d), 0.0),
        *(func.sum(case((d <= b, 1), else_=0)) for b in bounds),
    ).group_by(*groups)
    found = {}
    for row in s.execute(q):
        key, (count, total, *below) = tuple(row[: len(keys)]), row[len(keys) :]
        found[key] = Histogram(bounds, [int(n or 0) for n in below], int(count), float(total))
    return found


def collect(s: Session) -> Stats:
    """The whole deployment's `Stats`, in six aggregate queries."""
    runs = dict.fromkeys(RUN_STATES, 0)
    runs.update(
        {state: n for state, n in s.execute(select(Run.state, func.count()).group_by(Run.state))}
    )

    step_runs: dict[tuple[str, str], int] = {}
    hits: dict[str, int] = {}
    misses: dict[str, int] = {}
    # A retry is the same miss again, and a step that failed before its fingerprint (an
    # unreadable input, a skipped step) never looked the cache up.
    looked_up = func.sum(
        case(((StepRun.attempt == 1) & StepRun.fingerprint.isnot(None), 1), else_=0)
    )
    for kind, state, n, first in s.execute(
        select(StepRun.kind, StepRun.state, func.count(), looked_up).group_by(
            StepRun.kind, StepRun.state
        )
    ):
        step_runs[(kind, state)] = n
        cached = state == "cached"
        hits[kind] = hits.get(kind, 0) + (n if cached else 0)
        misses[kind] = misses.get(kind, 0) + (0 if cached else int(first or 0))

    steps = histograms(
        s,
        [StepRun.kind, StepRun.state],
        seconds_between(StepRun.started_at, StepRun.finished_at),
        [
            StepRun.state.in_(COMPUTED),
            StepRun.started_at.isnot(None),
            StepRun.finished_at.isnot(None),
        ],
        STEP_BUCKETS,
    )
    queue = histograms(
        s,
        [],
        seconds_between(Run.created_at, Run.started_at),
        [Run.started_at.isnot(None)],
        QUEUE_BUCKETS,
    ).get((), Histogram(QUEUE_BUCKETS, [0] * len(QUEUE_BUCKETS)))

    written = dict(
        s.execute(
            select(ArtifactRow.type, func.sum(ArtifactRow.size_bytes))
            .where(ArtifactRow.step_run_id.isnot(None))
            .group_by(ArtifactRow.type)
        ).all()
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
        step_seconds=steps,
        run_queue_seconds=queue,
        written_bytes={t: int(n or 0) for t, n in written.items()},
        audits=audits,
    )


__all__ = ["AUDITED", "Histogram", "Stats", "collect", "seconds_between"]
