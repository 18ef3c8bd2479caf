"""OpenLineage events for a run: a START and a COMPLETE, FAIL or ABORT `RunEvent` for the workflow
run and for every step run, so that any lineage server (Marquez, DataHub, OpenMetadata, ...) sees
what Cairn made from what, without reading Cairn's database.

Sent through `openlineage-python`'s own client, configured its usual way (`OPENLINEAGE_URL`,
`OPENLINEAGE_CONFIG`, an `openlineage.yml`, `OPENLINEAGE__TRANSPORT__*`), so its file, HTTP,
Kafka... transports all work; nothing is configured: nothing is sent and the client is never
imported (it costs a run ~0.4 s). The job namespace is `OPENLINEAGE_NAMESPACE` (default `cairn`);
the workflow is a job, each step the job `WORKFLOW.STEP`, whose runs name the workflow's run as
their `parent`. A dataset is an artifact or a raw source where it lies, named by the spec's
conventions (https://openlineage.io/docs/spec/naming): the namespace is the store's (or source's)
scheme and authority (`file://HOST` for a local path, `s3://bucket`), the name its path there;
its `version` facet is Cairn's content digest, models' `datasetType` is MODEL.

Events go out on a thread of their own: a slow or unreachable endpoint never holds a step up, and
a failed send never fails the run. The first failure is logged once, with what to fix, and the
run's remaining events are dropped rather than each waiting out the client's retries again.
What events carry is what MLflow is given (configs name secrets' variables, never their values);
source URIs lose any user, password and query string, and a transport's credentials stay in its
headers.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cairn.workflow import Step, Workflow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

# Who made the events, and where Cairn's own facets are specified (openlineage_facets.json beside
# this module, published under this address).
PRODUCER = "https://github.com/cairn-llm/cairn"
FACETS_URL = f"{PRODUCER}/blob/main/platform/cairn/engine/openlineage_facets.json"
# Step runs' ids: the same Cairn run, step and attempt always give the same OpenLineage run id, so
# a cache hit can name the run that computed its outputs.
RUN_IDS = uuid.UUID("4f0e2c52-9c1b-4d0e-8a57-6b7f3c2d1a90")
CLOSE_WAIT_S = 30.0  # the longest a run's end waits for its events to be sent
CONFIG = "OPENLINEAGE_URL / OPENLINEAGE_CONFIG / openlineage.yml / OPENLINEAGE__TRANSPORT__*"
Inputs = dict[str, list[dict[str, Any]]]


def configured() -> bool:
    """Whether the user configured an OpenLineage transport, looked up as the client would
    (without importing it): `OPENLINEAGE_DISABLED=true` turns it off."""
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OPENLINEAGE_URL") or any(
        k.startswith("OPENLINEAGE__TRANSPORT") for k in os.environ
    ):
        return True
    files = [
        os.environ.get("OPENLINEAGE_CONFIG"),
        os.path.join(os.getcwd(), "openlineage.yml"),
        os.path.expanduser("~/.openlineage/openlineage.yml"),
    ]
    return any(f and os.path.isfile(f) for f in files)


def dataset_name(uri: str) -> tuple[str, str]:
    """(namespace, name) of data at `uri` by the spec's naming: a local path (or `file://`) is
    `file://HOST` and its absolute path, an object store's the bucket and its key, anything else
    `scheme://host[:port]` and its path; user, password and query string never appear."""
    target = uri.split("::")[-1]  # fsspec chains (`simplecache::s3://...`): the data's own URL
    parts = urlsplit(target)
    if not parts.scheme or parts.scheme == "file" or len(parts.scheme) == 1:  # C:\ on Windows
        path = parts.path if parts.scheme == "file" else target
        return f"file://{parts.hostname or socket.gethostname()}", os.path.abspath(path)
    authority = parts.hostname or ""
    if parts.port:
        authority += f":{parts.port}"
    scheme = "gs" if parts.scheme == "gcs" else parts.scheme
    path = parts.path.lstrip("/") if scheme in ("s3", "s3a", "gs") else parts.path or "/"
    return f"{scheme}://{authority}", path


def _never_fails(method: Callable[..., None]) -> Callable[..., None]:
    """A hook the scheduler calls: nothing without a transport, and never the run's failure. A
    bug building an event is logged once, with its traceback, and the run's events stop."""

    @functools.wraps(method)
    def hook(self: Lineage, *args: Any, **kwargs: Any) -> None:
        if self.client is None or self._broken:
            return
        try:
            method(self, *args, **kwargs)
        except Exception:
            self._broken = True
            log.warning(
                "OpenLineage: could not build an event of run %s (a bug in Cairn: please report "
                "it); the run goes on without its remaining events. Fix meanwhile: set "
                "OPENLINEAGE_DISABLED=true",
                self.run_id,
                exc_info=True,
            )
            self._close()

    return hook


class Lineage:
    """One run's OpenLineage events; every hook does nothing when no transport is configured.

    `sessions` finds, for a cache hit, the run that computed its outputs."""

    def __init__(
        self, wf: Workflow, run_id: str, sessions: sessionmaker[Session], client: Any = None
    ) -> None:
        self.wf = wf
        self.run_id = run_id
        self.sessions = sessions
        self.namespace = os.environ.get("OPENLINEAGE_NAMESPACE") or "cairn"
        self.client = client
        if self.client is None and configured():
            from openlineage.client import OpenLineageClient

            try:
                self.client = OpenLineageClient()
            except Exception as ex:  # a configuration it cannot use: the run goes on without
                log.warning(
                    "OpenLineage: the configured transport cannot be used (%s: %s); run %s "
                    "sends no events. Fix: correct %s (see openlineage-python's documentation), "
                    "or set OPENLINEAGE_DISABLED=true",
                    type(ex).__name__,
                    ex,
                    run_id,
                    CONFIG,
                )
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._failed = False  # a send failed: the rest are dropped
        self._broken = False  # building an event failed: no more are built

    # -- the workflow run (the parent of every step run) ------------------------------------
    @_never_fails
    def run_started(self, resumed_from: str | None) -> None:
        facets = {
            "cairn": self._custom(
                "CairnRunFacet",
                runId=self.run_id,
                workflowDigest=self.wf.digest,
                **({"resumedFrom": resumed_from} if resumed_from else {}),
            )
        }
        self._send("START", self.wf.name, self._uuid(self.run_id), facets, job_type="DAG")

    @_never_fails
    def run_finished(self, state: str, error: str | None) -> None:
        """The workflow run's end; then waits (at most `CLOSE_WAIT_S`) for the events to go."""
        facets = self._error(error) if error else {}
        self._send(
            _event_type(state), self.wf.name, self._uuid(self.run_id), facets, job_type="DAG"
        )
        self._close()

    # -- step runs ------------------------------------------------------------------------------
    @_never_fails
    def step_started(self, step: Step, attempt: int, fp: str | None, inputs: Inputs) -> None:
        self._step("START", step, attempt, fp, inputs)

    @_never_fails
    def step_succeeded(
        self, step: Step, attempt: int, fp: str, inputs: Inputs, outputs: dict[str, Any]
    ) -> None:
        self._step("COMPLETE", step, attempt, fp, inputs, outputs)

    @_never_fails
    def step_cached(
        self, step: Step, fp: str, inputs: Inputs, outputs: dict[str, Any], reused: str | None
    ) -> None:
        """A cache hit: START and COMPLETE, its outputs those the hit reuses, and a facet naming
        the run that computed them."""
        cache: dict[str, Any] = {"computedBy": self._computed_by(outputs)}
        if reused:
            cache["reused"] = reused
        extra = {"cairn_cache": self._custom("CairnCacheRunFacet", **cache)}
        self._step("START", step, 1, fp, inputs, extra=extra)
        self._step("COMPLETE", step, 1, fp, inputs, outputs, extra=extra)

    @_never_fails
    def step_failed(self, step: Step, attempt: int, fp: str | None, state: str, error: str) -> None:
        """An attempt that failed (FAIL) or was cancelled (ABORT)."""
        self._step(_event_type(state), step, attempt, fp, {}, extra=self._error(error))

    @_never_fails
    def step_not_run(self, step: Step, state: str, why: str, fp: str | None = None) -> None:
        """A step that never started (an unreadable input, no node fits, an upstream failed): a
        START and its FAIL or ABORT, so every step run has both."""
        self._step("START", step, 1, fp, {})
        self.step_failed(step, 1, fp, state, why)

    # -- building events ----------------------------------------------------------------------
    def _step(
        self,
        event_type: str,
        step: Step,
        attempt: int,
        fp: str | None,
        inputs: Inputs,
        outputs: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        from openlineage.client.facet_v2 import parent_run

        facets: dict[str, Any] = {
            # The workflow's run is both the parent and the root (facets=None: none sent empty).
            "parent": parent_run.ParentRunFacet(
                run=parent_run.Run(runId=self._uuid(self.run_id), facets=None),
                job=parent_run.Job(namespace=self.namespace, name=self.wf.name, facets=None),
                root=parent_run.Root(
                    run=parent_run.RootRun(runId=self._uuid(self.run_id), facets=None),
                    job=parent_run.RootJob(
                        namespace=self.namespace, name=self.wf.name, facets=None
                    ),
                ),
                producer=PRODUCER,
            ),
            "cairn": self._custom(
                "CairnRunFacet",
                runId=self.run_id,
                step=step.name,
                kind=step.kind,
                attempt=attempt,
                **({"fingerprint": fp} if fp else {}),
            ),
            "cairn_config": self._custom(
                "CairnConfigRunFacet", kind=step.kind, config=step.config.model_dump(mode="json")
            ),
            **(extra or {}),
        }
        run_id = self._uuid(f"{self.run_id}/{step.name}/{attempt}")
        ins = [
            self._dataset(i["uri"], i["digest"], i["type"], None, output=False)
            for items in inputs.values()
            for i in items
        ]
        outs = [
            self._dataset(a["uri"], a["digest"], a["type"], a.get("metadata"), output=True)
            for a in (outputs or {}).values()
        ]
        self._send(event_type, f"{self.wf.name}.{step.name}", run_id, facets, "TASK", ins, outs)

    def _send(
        self,
        event_type: str,
        job_name: str,
        run_id: str,
        run_facets: dict[str, Any],
        job_type: str,
        inputs: list[Any] | None = None,
        outputs: list[Any] | None = None,
    ) -> None:
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import (
            documentation_job,
            job_type_job,
            processing_engine_run,
        )

        job_facets: dict[str, Any] = {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="CAIRN", jobType=job_type, producer=PRODUCER
            )
        }
        if job_type == "DAG" and self.wf.description:
            job_facets["documentation"] = documentation_job.DocumentationJobFacet(
                description=self.wf.description, producer=PRODUCER
            )
        run_facets = {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=_version("cairn"),
                name="Cairn",
                openlineageAdapterVersion=_version("openlineage-python"),
                producer=PRODUCER,
            ),
            **run_facets,
        }
        event = RunEvent(
            eventType=RunState(event_type),
            eventTime=datetime.now(UTC).isoformat(),
            run=Run(runId=run_id, facets=run_facets),
            job=Job(namespace=self.namespace, name=job_name, facets=job_facets),
            inputs=inputs or [],
            outputs=outputs or [],
            producer=PRODUCER,
        )
        if self._failed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._sender, name="openlineage", daemon=True)
            self._thread.start()
        self._queue.put(event)

    def _dataset(
        self, uri: str, digest: str, type_: str, meta: dict[str, Any] | None, output: bool
    ) -> Any:
        from openlineage.client.event_v2 import InputDataset, OutputDataset
        from openlineage.client.facet_v2 import dataset_type_dataset, dataset_version_dataset

        namespace, name = dataset_name(uri)
        model = type_ in ("model", "checkpoint")
        facets: dict[str, Any] = {
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=digest, producer=PRODUCER
            ),
            "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(
                datasetType="MODEL" if model else "FILE",
                subType=type_.upper() if type_ != "model" else None,
                producer=PRODUCER,
            ),
        }
        meta = meta or {}
        if type_ == "eval_report" and meta.get("metrics"):
            # JSON has no NaN or infinity: a score that is one is left out, not sent invalid.
            scores = {k: v for k, v in meta["metrics"].items() if math.isfinite(float(v))}
            facets["cairn_evalScores"] = self._custom(
                "CairnEvalScoresDatasetFacet",
                metrics=scores,
                **({"modelDigest": str(meta["model_digest"])} if meta.get("model_digest") else {}),
            )
        cls = OutputDataset if output else InputDataset
        return cls(namespace=namespace, name=name, facets=facets)

    @staticmethod
    def _custom(definition: str, **fields: Any) -> dict[str, Any]:
        """One of Cairn's own facets, as the spec has every facet: who made it and its schema."""
        return {"_producer": PRODUCER, "_schemaURL": f"{FACETS_URL}#/$defs/{definition}", **fields}

    @staticmethod
    def _error(message: str) -> dict[str, Any]:
        """The failure as the user reads it (never the traceback: a stage's locals may be in it)."""
        from openlineage.client.facet_v2 import error_message_run

        return {
            "errorMessage": error_message_run.ErrorMessageRunFacet(
                message=message[:5000], programmingLanguage="python", producer=PRODUCER
            )
        }

    def _uuid(self, key: str) -> str:
        return str(uuid.uuid5(RUN_IDS, key))

    def _computed_by(self, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """For each cached output, the step run that first made it and its OpenLineage run."""
        from sqlalchemy import select

        from cairn.db.models import ArtifactRow, Run, StepRun

        found = []
        with self.sessions() as s:
            for name, a in outputs.items():
                row = s.execute(
                    select(StepRun.run_id, StepRun.step, StepRun.attempt, Run.workflow_name)
                    .join(ArtifactRow, ArtifactRow.step_run_id == StepRun.id)
                    .join(Run, Run.id == StepRun.run_id)
                    .where(ArtifactRow.digest == a["digest"])
                ).first()
                if row is None:  # made before step runs were linked to artifacts
                    continue
                run_id, step, attempt, workflow = row
                found.append(
                    {
                        "output": name,
                        "cairnRunId": run_id,
                        "step": step,
                        "runId": self._uuid(f"{run_id}/{step}/{attempt}"),
                        "job": {"namespace": self.namespace, "name": f"{workflow}.{step}"},
                    }
                )
        return found

    # -- sending --------------------------------------------------------------------------------
    def _sender(self) -> None:
        while (event := self._queue.get()) is not None:
            if not self._failed:
                try:
                    self.client.emit(event)
                except Exception as ex:  # never the run's failure: said once, and what to do
                    self._failed = True
                    log.warning(
                        "OpenLineage: could not send the events of run %s (%s: %s); its "
                        "remaining events are dropped. Fix: check the transport configured in "
                        "%s (is the endpoint up and reachable from here?), or set "
                        "OPENLINEAGE_DISABLED=true",
                        self.run_id,
                        type(ex).__name__,
                        ex,
                        CONFIG,
                    )
            self._queue.task_done()

    def _close(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(CLOSE_WAIT_S)
        if self._thread.is_alive():
            log.warning(
                "OpenLineage: %d event(s) of run %s still unsent after %.0f s; not waiting "
                "longer. Fix: check that the endpoint configured in %s answers promptly",
                self._queue.qsize(),
                self.run_id,
                CLOSE_WAIT_S,
                CONFIG,
            )
        else:
            self.client.close(CLOSE_WAIT_S)
        self._thread = None


def _event_type(state: str) -> str:
    return {"succeeded": "COMPLETE", "cancelled": "ABORT"}.get(state, "FAIL")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"
