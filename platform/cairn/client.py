"""`Client`: one Cairn deployment (its database, artifact store, MLflow and Ray), as typed calls.

The CLI and (next) the server call this and nothing below it: every command is one method, and
every method returns a type from `cairn.results`. The module-level functions of `cairn` use a
`Client()` built from the environment (`Settings.from_env`), as `httpx.get` uses a `Client`.
Heavy parts (the engine, SQLAlchemy, MLflow, Ray) are imported on first use, so `import cairn`
stays cheap for scripts and workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.errors import CairnError, NotFound
from cairn.results import (
    Artifact,
    AuditReport,
    LineageGraph,
    LineageNode,
    RunLogs,
    RunResult,
    RunStatus,
    RunSummary,
    SignedRelease,
)
from cairn.settings import Settings

if TYPE_CHECKING:
    from cairn.engine import Engine
    from cairn.engine.progress import Display
    from cairn.engine.stats import Stats
    from cairn.engine.tokens import Principal
    from cairn.tracking import Tracker
    from cairn.workflow import Workflow


class Client:
    """A handle on one Cairn deployment.

    `settings` default to the environment (`CAIRN_HOME`, `CAIRN_DATABASE_URL`,
    `MLFLOW_TRACKING_URI`, `CAIRN_STORE`, `CAIRN_CHECKPOINTS`). `executor` and `tracker` replace
    the Ray executor and the MLflow tracker (tests pass `cairn.testing`'s fakes).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        executor: Any = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._executor = executor
        self._tracker = tracker
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from cairn.engine import Engine

            self._engine = Engine(self.settings, executor=self._executor, tracker=self._tracker)
        return self._engine

    # -- runs ----------------------------------------------------------------------------------
    def run(
        self, workflow: Workflow, *, run_id: str | None = None, display: Display | None = None
    ) -> RunResult:
        """Run `workflow` here (local Ray, or `RAY_ADDRESS`) to its end. `run_id` adopts a run
        that `submit` left pending; `display` shows progress (the CLI's live table)."""
        return self.engine.run(workflow, run_id=run_id, display=display)

    def submit(
        self,
        workflow: Workflow,
        address: str,
        *,
        python: str | None = None,
        working_dir: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Run `workflow` on the Ray cluster at `address` (http://HEAD:8265) through the Jobs
        API; returns the run id, which is also the Ray submission id."""
        from cairn.engine import jobs

        return jobs.submit(
            self.engine, workflow, address, python=python, working_dir=working_dir, owner=owner
        )

    def start(
        self, workflow: Workflow, *, owner: str | None = None, resumed_from: str | None = None
    ) -> str:
        """Run `workflow` in a driver process of its own on this machine and return its run id
        at once (what `cairn server` does for a submission that names no Ray cluster)."""
        from cairn.engine import detached

        run_id = self.engine.create_run(workflow, resumed_from=resumed_from, owner=owner)
        detached.start(self.settings, run_id)
        return run_id

    def start_resume(self, run_id: str, *, owner: str | None = None) -> str:
        """`resume` in a driver process of its own; returns the new run's id at once."""
        return self.start(self.engine.prepare_resume(run_id), owner=owner, resumed_from=run_id)

    def recorded_workflow(self, run_id: str) -> Workflow:
        """The workflow a run was created with, as recorded (what its driver runs)."""
        return self.engine.adopt(run_id)

    def resume(self, run_id: str, *, display: Display | None = None) -> RunResult:
        """A new run of `run_id`'s workflow, linked to it: what it finished comes from the cache."""
        return self.engine.resume(run_id, display=display)

    def cancel(self, run_id: str, *, by: str | None = None) -> str:
        """Ask a run to stop; returns `cancelling`, `cancelled` (no driver was there to ask) or
        the state it had already ended in. A submitted run's Ray job is stopped too. `by` is
        who asked (recorded in the event log; default: user@host)."""
        from cairn.engine import views

        state = self.engine.request_cancel(run_id, by=by)
        with self.engine.sessions() as s:
            address = views.ray_address(s, run_id)
        if address and state == "cancelling":
            from cairn.engine import jobs

            jobs.stop_job(address, run_id)
        return state

    def status(self, run_id: str) -> RunStatus:
        """A run's state, every attempt of every step, its compute and its event log."""
        from dataclasses import replace

        from cairn.db.models import Run
        from cairn.engine import views

        with self.engine.sessions() as s:
            row = s.get(Run, run_id)
            alive = self.engine.driver_alive(row) if row is not None else None
            status = views.run_status(s, run_id, alive)
        if status.ray_address and status.state in ("pending", "running"):
            from cairn.engine import jobs

            try:  # a job that died before its driver could record anything shows here
                job = jobs.job_status(status.ray_address, run_id)
            except Exception as e:  # the cluster may be gone; the database still answers
                job = f"unknown ({e})"
            status = replace(status, ray_job_status=job)
        return status

    def runs(
        self,
        limit: int = 20,
        *,
        offset: int = 0,
        state: str | None = None,
        workflow: str | None = None,
        owner: str | None = None,
    ) -> list[RunSummary]:
        """The newest runs first, `limit` from `offset`, filtered by state, workflow or owner."""
        from cairn.engine import views

        with self.engine.sessions() as s:
            return views.list_runs(
                s, limit, offset=offset, state=state, workflow=workflow, owner=owner
            )

    def logs(self, run_id: str, step: str | None = None) -> RunLogs:
        """The run's own log and each step's (or one step's), and, for a submitted run, the Ray
        job driver's log under "ray job driver"."""
        from cairn.engine import views

        with self.engine.sessions() as s:
            address = views.ray_address(s, run_id)
        folder = self.settings.logs_dir(run_id)
        if step is not None:
            path = folder / f"{step}.log"
            if not path.exists():
                known = ", ".join(sorted(p.stem for p in folder.glob("*.log"))) or "(none yet)"
                raise NotFound(f"no log for step '{step}' in run {run_id}; logs exist for: {known}")
            return RunLogs(run_id, {step: path.read_text()})
        files = sorted(folder.glob("*.log"), key=lambda p: (p.stem != "run", p.stem))
        logs = {f.stem: f.read_text() for f in files}
        if address:
            from cairn.engine import jobs

            try:
                logs["ray job driver"] = jobs.job_logs(address, run_id)
            except CairnError as e:
                logs["ray job driver"] = f"(unavailable: {e})"
        return RunLogs(run_id, logs)

    # -- artifacts and lineage -----------------------------------------------------------------
    def artifact(self, ref: str, *types: str) -> tuple[Artifact, Path]:
        """The artifact (of one of `types`) whose digest starts with `ref`, and a local
        directory holding it (downloaded and cached when the store is remote)."""
        from cairn.artifacts import queries

        with self.engine.sessions() as s:
            rows = queries.find_artifacts(s, ref, types)
        if len(rows) != 1:
            what = " or ".join(types) or "artifact"
            raise CairnError(
                f"{ref}: "
                + (f"no {what} has that digest" if not rows else f"ambiguous ({len(rows)} match)")
                + "; give a digest (or a longer prefix) from `cairn status RUN`"
            )
        row = rows[0]
        art = Artifact(row.digest, row.uri, row.type, row.manifest.get("metadata") or {})
        return art, self.engine.store.local_path(row.uri, row.digest)

    def lineage(self, ref: str) -> LineageNode:
        """An artifact's ancestry back to its raw sources. `ref` is a digest (or a unique prefix
        of one) in Cairn's database, or a path: a release bundle (its lineage.json) or an
        artifact directory (walked through its manifests, no database needed)."""
        from cairn.artifacts import graphs

        graph = self.lineage_graph(ref)
        return LineageNode.from_dict(graphs.nest(graph.nodes, graph.edges, graph.root))

    def lineage_graph(self, ref: str, direction: str = "ancestors") -> LineageGraph:
        """`lineage(ref)` as a flat graph (for Graphviz and Mermaid); a release bundle's is its
        whole lineage.json, evaluation reports included. `direction="descendants"` gives
        everything made from a digest instead."""
        from cairn.artifacts import graphs, queries

        if direction not in ("ancestors", "descendants"):
            raise CairnError(f"direction {direction!r}: use ancestors or descendants")
        if Path(ref).exists() and direction == "ancestors":
            try:
                nodes, edges, root = graphs.from_path(ref)
            except (OSError, ValueError, KeyError) as e:
                raise CairnError(f"{ref}: not a release bundle or artifact directory ({e})") from e
            return LineageGraph(root, nodes, edges)
        with self.engine.sessions() as s:
            return LineageGraph(*queries.graph(s, ref, direction))

    def artifact_info(self, ref: str) -> dict[str, Any]:
        """An artifact's row, manifest and every step run that read or produced it."""
        from cairn.artifacts import queries

        with self.engine.sessions() as s:
            row = queries.one_artifact(s, ref)
            return {
                "digest": row.digest,
                "type": row.type,
                "uri": row.uri,
                "status": row.status,
                "size_bytes": row.size_bytes,
                "file_count": row.file_count,
                "manifest": row.manifest,
                "used_by": queries.where_used(s, row.digest),
            }

    def artifacts(self, type_: str, limit: int = 100) -> list[Artifact]:
        """The newest artifacts of one type (`release`, `endpoint`, ...)."""
        from sqlalchemy import select

        from cairn.db.models import ArtifactRow

        with self.engine.sessions() as s:
            rows = s.scalars(
                select(ArtifactRow)
                .where(ArtifactRow.type == type_)
                .order_by(ArtifactRow.created_at.desc())
                .limit(limit)
            )
            return [
                Artifact(r.digest, r.uri, r.type, r.manifest.get("metadata") or {}) for r in rows
            ]

    # -- API tokens (cairn server) -------------------------------------------------------------
    def create_token(self, name: str, role: str, *, by: str | None = None) -> str:
        """A new API token for `cairn server`; its secret is returned once and stored hashed."""
        from cairn.engine import tokens

        with self.engine.sessions.begin() as s:
            return tokens.create(s, name, role, by)

    def tokens(self) -> list[dict[str, Any]]:
        """Every token's name, role, creator, last use and whether it is revoked (no secret)."""
        from cairn.engine import tokens

        with self.engine.sessions() as s:
            return tokens.listing(s)

    def revoke_token(self, name: str, *, by: str | None = None) -> None:
        """Revoke a token by name: requests carrying it are refused from now on."""
        from cairn.engine import tokens

        with self.engine.sessions.begin() as s:
            tokens.revoke(s, name, by)

    def authenticate(self, secret: str) -> Principal | None:
        """The name and role of a live token (None for an unknown or revoked one)."""
        from cairn.engine import tokens

        with self.engine.sessions.begin() as s:
            return tokens.verify(s, secret)

    def has_admin(self) -> bool:
        """Is there a live admin token? (`cairn server` creates the first one if not.)"""
        from cairn.engine import tokens

        with self.engine.sessions() as s:
            return tokens.has_admin(s)

    def audit(
        self, path: str | Path, *, load_model: bool = True, public_key: str | Path | None = None
    ) -> AuditReport:
        """Verify a release bundle (or re-hash one artifact) at `path`: `ok` only when every
        check holds; each failing check names the files. Needs nothing but the bundle (and, to
        verify its signature, the signer's `public_key`)."""
        return audit(path, load_model=load_model, public_key=public_key)

    def sign_release(
        self,
        path: str | Path,
        key: str | Path,
        *,
        password: str | None = None,
        load_model: bool = True,
    ) -> SignedRelease:
        """Sign the release bundle at `path` with the EC private key file `key` (OpenSSF model
        signing): `path/release.sig`. Needs nothing but the bundle and the key."""
        return sign_release(path, key, password=password, load_model=load_model)

    # -- the dashboard's reads (cairn server's pages) --------------------------------------------
    def step_graph(self, run_id: str) -> list[dict[str, Any]]:
        """Each step of the run's recorded workflow, in the file's order, as {step, kind,
        after}: `after` names the steps it reads from (its DAG, pending steps included)."""
        from cairn.db.models import Run
        from cairn.workflow import outline

        with self.engine.sessions() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}: `cairn runs` lists the runs")
            text = run.workflow_text
        return outline(text)

    def step_detail(self, run_id: str, step: str) -> dict[str, Any]:
        """One step of a run: the last attempt's kind, state, fingerprint, config and resources,
        the artifacts it read by input slot, its MLflow run id and, for a cache hit, `made_by`:
        the step run that made the outputs it reused."""
        from cairn.engine import views

        with self.engine.sessions() as s:
            return views.step_detail(s, run_id, step)

    def metrics(self, run_id: str, step: str) -> dict[str, list[tuple[int, float]]]:
        """A step's metrics from MLflow, each as (step, value) points in order: its last
        attempt's, or for a cache hit those of the step run that made what it reused. Empty
        when the step logged none (or MLflow has not caught up with a running step yet)."""
        detail = self.step_detail(run_id, step)
        source = detail["made_by"] or detail
        mlflow_run_id = source["mlflow_run_id"]
        if not mlflow_run_id or mlflow_run_id.startswith("pending:"):
            return {}
        from cairn.tracking.mlflow import reader

        tracker = self._tracker or reader(self.settings.mlflow_uri, self.settings.mlflow_artifacts)
        try:
            return tracker.history(mlflow_run_id)
        except Exception as e:  # MLflow's own errors: say which store and run, then re-raise
            from cairn.settings import redact

            raise CairnError(
                f"the metrics of step {step} of run {run_id} could not be read from MLflow at "
                f"{redact(self.settings.mlflow_uri)} (its run {mlflow_run_id}): {e}"
            ) from e

    def audit_release(
        self, path: str | Path, *, load_model: bool = True, by: str | None = None
    ) -> AuditReport:
        """`audit(path)`, recorded in this deployment's event log (`release_audited`, which
        /metrics counts by outcome). `by` is who asked (default: user@host)."""
        from cairn.db.models import Event
        from cairn.engine.runs import local_user
        from cairn.engine.stats import AUDITED

        report = audit(path, load_model=load_model)
        who = by or local_user()
        failed = [c.name for c in report.checks if not c.ok]
        outcome = "ok" if report.ok else f"failed ({', '.join(failed)})"
        with self.engine.sessions.begin() as s:
            s.add(
                Event(
                    type=AUDITED,
                    message=f"release {report.path} audited by {who}: {outcome}",
                    data={
                        "bundle": report.path,
                        "ok": report.ok,
                        "bundle_digest": report.bundle_digest,
                        "failed": failed,
                        "by": who,
                        "report": report.to_dict(),
                    },
                )
            )
        return report

    def last_audit(self, path: str | Path) -> tuple[str, AuditReport] | None:
        """The newest audit of the bundle at `path` recorded by `audit_release` (when, and
        what it found), or None: what the server shows without re-hashing a bundle per view."""
        from sqlalchemy import select

        from cairn.db.models import Event
        from cairn.engine.stats import AUDITED
        from cairn.engine.views import iso

        with self.engine.sessions() as s:
            for ev in s.scalars(
                select(Event)
                .where(Event.run_id.is_(None), Event.type == AUDITED)
                .order_by(Event.id.desc())
                .limit(1000)
            ):
                if ev.data.get("bundle") == str(path) and ev.data.get("report"):
                    return iso(ev.ts) or "", AuditReport.from_dict(ev.data["report"])
        return None

    # -- the deployment in numbers (/metrics) --------------------------------------------------
    def stats(self) -> Stats:
        """Runs and step runs by state, step durations and run queue times (histograms), cache
        hits and misses, bytes written to the store and audits: aggregates over the whole
        deployment, computed by the database (what `cairn server`'s /metrics exports)."""
        from cairn.engine import stats

        with self.engine.sessions() as s:
            return stats.collect(s)


def audit(
    path: str | Path, *, load_model: bool = True, public_key: str | Path | None = None
) -> AuditReport:
    """`Client.audit` without a deployment: an audit needs only the bundle (a folder, or a URI
    such as s3://bucket/..., downloaded first)."""
    from cairn.artifacts.audit import audit as run_audit
    from cairn.artifacts.audit import is_uri
    from cairn.artifacts.signing import load_public_key

    if not is_uri(path) and not Path(path).is_dir():
        raise CairnError(f"{path}: no such directory; give the path of a release bundle")
    if public_key is not None:
        load_public_key(Path(public_key))  # a bad key is the caller's error, not a finding
    return run_audit(
        path, load_model=load_model, public_key=None if public_key is None else Path(public_key)
    )


def sign_release(
    path: str | Path, key: str | Path, *, password: str | None = None, load_model: bool = True
) -> SignedRelease:
    """`Client.sign_release` without a deployment: the bundle must pass `audit` first."""
    from cairn.artifacts import signing

    root, key = Path(path), Path(key)
    if not root.is_dir():
        raise CairnError(f"{path}: no such directory; give the path of a release bundle")
    signing.refuse_unsignable(root, key)
    public = signing.load_private_key(key, password)
    report = audit(root, load_model=load_model)
    if not report.ok:
        failed = [f"{c.name}: {c.problems[0]}" for c in report.checks if not c.ok]
        raise CairnError(
            f"{root}: not signed, because the audit fails ({'; '.join(failed)}); fix: run "
            f"`cairn audit {root}` and sign a bundle that passes"
        )
    files = signing.sign(root, key, password)
    return SignedRelease(
        str(root), str(root / signing.SIGNATURE), files, signing.key_hint(public), report
    )


def endpoint(path: Path) -> dict[str, Any]:
    """An endpoint artifact's `endpoint.json` (what `cairn stop` needs to stop its server)."""
    try:
        data: dict[str, Any] = json.loads((path / "endpoint.json").read_text())
    except (OSError, ValueError) as e:
        raise CairnError(f"{path}: not an endpoint artifact ({e})") from e
    return data
