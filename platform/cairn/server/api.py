"""The JSON API of `cairn server`: the public API (`cairn.Client`) over HTTP, with roles.

Every route is one Client call; what it returns is the `to_dict()` the CLI's `--json` prints, so
`cairn.remote.RemoteClient` reads it back into the same types. Reads need a viewer token;
validate, submit, cancel and resume a submitter's (cancel and resume on its own runs only);
tokens an admin's. Each mutation is recorded in the run's event log with the token's name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from cairn.client import Client
from cairn.engine.tokens import Principal
from cairn.server.auth import may_act_on, require
from cairn.workflow import Workflow, parse_workflow

router = APIRouter(prefix="/api")
Viewer = Annotated[Principal, Depends(require("viewer"))]
Submitter = Annotated[Principal, Depends(require("submitter"))]
Admin = Annotated[Principal, Depends(require("admin"))]
TERMINAL = ("succeeded", "failed", "cancelled", "cached")


def client(request: Request) -> Client:
    return request.app.state.client  # type: ignore[no-any-return]


class WorkflowIn(BaseModel):
    """A workflow file's text, and where it lies on the server's machine (its relative source
    paths resolve against that folder)."""

    text: str = Field(max_length=1 << 20)
    path: str | None = None


class SubmitIn(WorkflowIn):
    address: str | None = Field(
        None, description="a Ray cluster's dashboard (http://HEAD:8265); default: the server's"
    )


class TokenIn(BaseModel):
    name: str
    role: str = "viewer"


def workflow_of(body: WorkflowIn, request: Request) -> Workflow:
    path = Path(body.path) if body.path else client(request).settings.home / "submitted.yaml"
    return parse_workflow(body.text, path)


# -- runs ----------------------------------------------------------------------------------------
@router.get("/runs", summary="runs, newest first, filtered and paged")
def list_runs(
    request: Request,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    state: str | None = None,
    workflow: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    found = client(request).runs(limit, offset=offset, state=state, workflow=workflow, owner=owner)
    return {
        "runs": [r.to_dict() for r in found],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(found) == limit else None,
    }


@router.get("/runs/{run_id}", summary="a run: its steps, attempts, compute and events")
def run_status(run_id: str, request: Request, who: Viewer) -> dict[str, Any]:
    return client(request).status(run_id).to_dict()


@router.get("/runs/{run_id}/logs", summary="a run's logs (or one step's)")
def run_logs(run_id: str, request: Request, who: Viewer, step: str | None = None) -> dict[str, Any]:
    return client(request).logs(run_id, step).to_dict()


@router.get("/runs/{run_id}/logs/{step}/stream", summary="a step's log as it is written (SSE)")
def stream_log(run_id: str, step: str, request: Request, who: Viewer) -> StreamingResponse:
    c = client(request)
    c.status(run_id)  # 404 for an unknown run, before the stream starts
    path = c.settings.logs_dir(run_id) / f"{step}.log"
    return StreamingResponse(follow(c, run_id, step, path), media_type="text/event-stream")


def follow(c: Client, run_id: str, step: str, path: Path, poll: float = 0.5) -> Iterator[str]:
    """Server-sent events: each new line of the log as `data:`, then `event: end` once the
    step (or the run) has finished and everything written has been sent."""
    offset, pending = 0, ""
    while True:
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read(1 << 20)
            offset += len(chunk)
            pending += chunk.decode("utf-8", "replace")
            *lines, pending = pending.split("\n")
            for line in lines:
                yield f"data: {line}\n\n"
            if chunk:
                continue
        status = c.status(run_id)
        attempts = [a for a in status.steps if a.step == step]
        done = status.state in TERMINAL or (attempts and attempts[-1].state in TERMINAL)
        if done:
            if pending:
                yield f"data: {pending}\n\n"
            yield "event: end\ndata: \n\n"
            return
        time.sleep(poll)


@router.post("/validate", summary="check a workflow without running anything")
def validate(body: WorkflowIn, request: Request, who: Submitter) -> dict[str, Any]:
    wf = workflow_of(body, request)
    steps = [{"step": n, "kind": s.kind, "after": s.upstream()} for n, s in wf.steps.items()]
    return {"valid": True, "workflow": wf.name, "steps": steps}


@router.post("/runs", status_code=201, summary="submit a workflow (Ray Jobs API or embedded)")
def submit(body: SubmitIn, request: Request, who: Submitter) -> dict[str, Any]:
    c = client(request)
    wf = workflow_of(body, request)
    if not who.can("admin"):
        refuse_task_code(wf, who)
    address = body.address or request.app.state.ray_address
    run_id = c.submit(wf, address, owner=who.name) if address else c.start(wf, owner=who.name)
    return {"run_id": run_id, "status": "pending", "address": address}


def refuse_task_code(wf: Workflow, who: Principal) -> None:
    """`trust_task_code` runs Python from the workflow's folder on the server's machine: only
    an admin may submit that."""
    for name, step in wf.steps.items():
        if getattr(step.config, "trust_task_code", False):
            raise HTTPException(
                403,
                f"step {name} sets trust_task_code, which runs the tasks' Python on the "
                f"server; token {who.name} ({who.role}) cannot submit it: ask an admin",
            )


@router.post("/runs/{run_id}/cancel", summary="ask a run to stop")
def cancel(run_id: str, request: Request, who: Submitter) -> dict[str, Any]:
    c = client(request)
    owned_or_refuse(c, run_id, who, "cancel")
    return {"run_id": run_id, "status": c.cancel(run_id, by=who.name)}


@router.post("/runs/{run_id}/resume", status_code=201, summary="a new run that reuses the cache")
def resume(run_id: str, request: Request, who: Submitter) -> dict[str, Any]:
    c = client(request)
    owned_or_refuse(c, run_id, who, "resume")
    return {"run_id": c.start_resume(run_id, owner=who.name), "resumed_from": run_id}


def owned_or_refuse(c: Client, run_id: str, who: Principal, action: str) -> None:
    owner = c.status(run_id).owner
    if not may_act_on(who, owner):
        raise HTTPException(
            403,
            f"run {run_id} belongs to {owner}; token {who.name} ({who.role}) cannot {action} it",
        )


# -- artifacts, lineage, releases, endpoints ------------------------------------------------------
@router.get("/artifacts/{ref}", summary="an artifact: manifest and where it was used")
def artifact(ref: str, request: Request, who: Viewer) -> dict[str, Any]:
    return client(request).artifact_info(ref)


@router.get("/lineage/{ref}", summary="ancestors or descendants, as JSON, DOT or Mermaid")
def lineage(
    ref: str,
    request: Request,
    who: Viewer,
    direction: str = "ancestors",
    format: str = "json",
) -> Any:
    from cairn.artifacts import graphs

    if format == "tree":
        return client(request).lineage(ref).to_dict()
    graph = client(request).lineage_graph(ref, direction)
    if format == "json":
        return graph.to_dict()
    if format in ("dot", "mermaid"):
        draw = graphs.to_dot if format == "dot" else graphs.to_mermaid
        return PlainTextResponse(draw(graph.nodes, graph.edges))
    raise HTTPException(400, f"format {format!r}: use json, tree, dot or mermaid")


@router.get("/releases", summary="release bundles, newest first")
def releases(request: Request, who: Viewer) -> dict[str, Any]:
    return {
        "releases": [
            a.to_dict() | {"bundle": a.bundle} for a in client(request).artifacts("release")
        ]
    }


@router.get("/releases/{ref}", summary="a release: its files and its audit")
def release(
    ref: str, request: Request, who: Viewer, audit: bool = False, load_model: bool = False
) -> dict[str, Any]:
    """The newest audit recorded for the bundle (`audited_at`), or a new one when none is, or
    when `audit=true` asks: it re-hashes every file (and, with `load_model`, loads the model)
    and is recorded in the event log with who asked (and counted by /metrics)."""
    c = client(request)
    info = c.artifact_info(ref)
    if info["type"] != "release":
        raise HTTPException(404, f"{ref} is a {info['type']}, not a release")
    bundle = Path(info["uri"]) / (info["manifest"].get("metadata") or {}).get("bundle", "")
    files = sorted(
        str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()
    )
    last = None if audit or load_model else c.last_audit(bundle)
    if last is None:
        c.audit_release(bundle, load_model=load_model, by=who.name)
        last = c.last_audit(bundle)
    at, report = last if last else (None, None)
    return info | {
        "bundle": str(bundle),
        "files": files,
        "audit": report.to_dict() if report else None,
        "audited_at": at,
    }


@router.get("/endpoints", summary="endpoints: model digest, address, and whether it answers")
def endpoints(request: Request, who: Viewer) -> dict[str, Any]:
    from cairn.server.live import endpoint_health

    found = client(request).artifacts("endpoint")
    return {"endpoints": [a.to_dict() | endpoint_health(a.metadata) for a in found]}


# -- tokens ---------------------------------------------------------------------------------------
@router.get("/tokens", summary="API tokens (never their secrets)")
def tokens(request: Request, who: Admin) -> dict[str, Any]:
    return {"tokens": client(request).tokens()}


@router.post("/tokens", status_code=201, summary="create a token; its secret is shown once")
def create_token(body: TokenIn, request: Request, who: Admin) -> dict[str, Any]:
    secret = client(request).create_token(body.name, body.role, by=who.name)
    return {"name": body.name, "role": body.role, "token": secret}


@router.delete("/tokens/{name}", summary="revoke a token")
def revoke_token(name: str, request: Request, who: Admin) -> dict[str, Any]:
    client(request).revoke_token(name, by=who.name)
    return {"name": name, "revoked": True}
