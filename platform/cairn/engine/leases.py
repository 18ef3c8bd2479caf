"""Each fingerprint computed once, however many runs want it at the same time.

Before, runs started together on one database and store all missed the cache for the same step,
all computed it, and the store quarantined one finished artifact that another run had already
recorded. Now a run takes a step's lease (a row keyed by fingerprint in `step_leases`, marin's
step lease) before it looks in the cache, and holds it until the step has ended. A run that
finds the lease held by a live run waits; when the lease is free again it takes it and looks in
the cache: the holder's sealed result is a hit (state `cached`, naming the run that computed
it); after a holder that failed, the waiting run computes the step itself.

Taking a lease is one INSERT that the primary key makes atomic on SQLite and PostgreSQL alike.
A lease is live while its run's driver is (the same test as `cairn status`: the driver's process
on its own host, its heartbeat elsewhere); a lease whose holder died is taken over by a
compare-and-swap UPDATE that names the dead holder, so two runs cannot both take it over.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cairn.db.models import Run, StepLease, utcnow

DRIVER_LOST_S = 30.0  # no heartbeat for this long: the driver is gone


@dataclass(frozen=True)
class Held:
    """The lease is another live run's: which run, and its step of that name."""

    run_id: str
    step: str


@dataclass(frozen=True)
class Taken:
    """The lease is this run's now; `from_run`: the dead run it was taken over from."""

    from_run: str | None = None


def take(sessions: sessionmaker[Session], fp: str, run_id: str, step: str) -> Taken | Held:
    """Take the lease of `fp` for `run_id`, or say who holds it."""
    for _ in range(10):  # each pass ends unless the row changed under us
        try:
            with sessions.begin() as s:
                s.add(StepLease(fingerprint=fp, run_id=run_id, step=step, taken_at=utcnow()))
            return Taken()
        except IntegrityError:
            pass
        with sessions.begin() as s:
            lease = s.get(StepLease, fp)
            if lease is None:
                continue  # released since: try again
            if lease.run_id == run_id:
                return Taken()  # ours already (a retried attempt)
            holder = s.get(Run, lease.run_id)
            if (
                holder is not None
                and holder.state in ("pending", "running")
                and driver_alive(holder)
            ):
                return Held(lease.run_id, lease.step)
            dead = lease.run_id
            swapped = s.execute(
                update(StepLease)
                .where(StepLease.fingerprint == fp, StepLease.run_id == dead)
                .values(run_id=run_id, step=step, taken_at=utcnow())
            )
            if swapped.rowcount == 1:  # type: ignore[attr-defined]
                return Taken(from_run=dead)
    raise RuntimeError(f"the lease of fingerprint {fp[:12]} kept changing hands")


def release(sessions: sessionmaker[Session], run_id: str, fp: str | None = None) -> None:
    """Give up `run_id`'s lease of `fp` (every lease it holds, without `fp`)."""
    with sessions.begin() as s:
        where = [StepLease.run_id == run_id]
        if fp is not None:
            where.append(StepLease.fingerprint == fp)
        s.execute(delete(StepLease).where(*where))


def driver_alive(run: Run) -> bool:
    """Is the process driving `run` still there? Exact on its own host, by heartbeat elsewhere."""
    if run.driver_host == socket.gethostname() and run.driver_pid:
        try:
            os.kill(run.driver_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else
    if run.heartbeat_at is None:
        return run.state == "pending" and age(run.created_at) < DRIVER_LOST_S * 4
    return age(run.heartbeat_at) < DRIVER_LOST_S


def age(ts: datetime) -> float:
    if ts.tzinfo is None:  # SQLite hands back naive datetimes
        ts = ts.replace(tzinfo=UTC)
    return (datetime.now(UTC) - ts).total_seconds()
