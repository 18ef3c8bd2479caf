"""The pages about runs: the runs list, a run (its DAG, live), and one step of a run.

A run's page is a frame around one fragment (`run_body.html`: state, actions, DAG, steps,
events) that `/ui/runs/{id}/live` also serves alone; while the run is not finished the page's
script swaps in a fresh copy every two seconds, so states change in place without a reload.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from cairn.client import Client
from cairn.engine.tokens import Principal
from cairn.errors import CairnError, NotFound
from cairn.results import STATES, Attempt, RunStatus
from cairn.server.auth import may_act_on, require
from cairn.server.dashboard import charts
from cairn.server.dashboard.render import TERMINAL, PageRoute, page
from cairn.server.dashboard.svg import Node, graph_svg

router = APIRouter(route_class=PageRoute)
Viewer = Annotated[Principal, Depends(require("viewer"))]
PAGE = 50
LOG_TAIL = 256 * 1024  # a page shows the end of a long log; the API has all of it


def client(request: Request) -> Client:
    return request.app.state.client  # type: ignore[no-any-return]


@router.get("/ui/runs", include_in_schema=False)
def runs_list(
    request: Request,
    who: Viewer,
    state: str = "",
    workflow: str = "",
    owner: str = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    if state and state not in STATES:
        raise CairnError(f"state {state!r}: choose one of {', '.join(STATES)}")
    found = client(request).runs(
        PAGE + 1,
        offset=offset,
        state=state or None,
        workflow=workflow.strip() or None,
        owner=owner.strip() or None,
    )
    filters = {"state": state, "workflow": workflow.strip(), "owner": owner.strip()}
    return page(
        request,
        "runs.html",
        {
            "runs": found[:PAGE],
            "filters": filters,
            "offset": offset,
            "newer": max(offset - PAGE, 0) if offset else None,
            "older": offset + PAGE if len(found) > PAGE else None,
        },
    )


def last_attempts(status: RunStatus) -> dict[str, Attempt]:
    """Each step's latest attempt (attempts come in the order they were recorded)."""
    out: dict[str, Attempt] = {}
    for a in status.steps:
        if a.step not in out or a.attempt >= out[a.step].attempt:
            out[a.step] = a
    return out


def run_dag(
    run_id: str, graph: list[dict[str, Any]], last: dict[str, Attempt], finished: bool
) -> Any:
    """The run's steps as boxes coloured by state, each a link to its step's page."""
    kinds = {g["step"]: g["kind"] for g in graph}
    names = list(kinds) + [s for s in last if s not in kinds]
    nodes = []
    for name in names:
        a = last.get(name)
        state = a.state if a else "not run" if finished else "pending"
        tries = f" · attempt {a.attempt}" if a and a.attempt > 1 else ""
        kind = a.kind if a else kinds.get(name, "")
        nodes.append(
            Node(
                id=name,
                label=name,
                sub=f"{kind} · {state}{tries}" if kind else state,
                css=f"s-{state.replace(' ', '-')}",
                href=f"/ui/runs/{run_id}/steps/{name}" if a else None,
                title=f"{name} ({kind}): {state}",
            )
        )
    edges = [(up, g["step"]) for g in graph for up in g["after"]]
    return graph_svg(nodes, edges, f"steps of run {run_id}", ident="run")


def run_context(request: Request, run_id: str, who: Principal) -> dict[str, Any]:
    c = client(request)
    status = c.status(run_id)
    last = last_attempts(status)
    releases = [
        (a.step, art)
        for a in last.values()
        for art in a.artifacts.values()
        if art.type == "release"
    ]
    finished = status.state in TERMINAL
    return {
        "run": status,
        "last": last,
        "dag": run_dag(run_id, c.step_graph(run_id), last, finished),
        "releases": releases,
        "finished": finished,
        "may_act": may_act_on(who, status.owner),
    }


@router.get("/ui/runs/{run_id}", include_in_schema=False)
def run_page(run_id: str, request: Request, who: Viewer) -> Response:
    return page(request, "run.html", run_context(request, run_id, who))


@router.get("/ui/runs/{run_id}/live", include_in_schema=False)
def run_live(run_id: str, request: Request, who: Viewer) -> Response:
    """The run page's changing part alone (what the page's script swaps in)."""
    return page(request, "run_body.html", run_context(request, run_id, who))


def metric_charts(
    metrics: dict[str, list[tuple[int, float]]],
) -> tuple[list[Any], dict[str, float]]:
    """(the charts of the metrics with a history: the losses together first (train and
    validation on one chart), then one per metric; the metrics logged once, such as evaluation
    scores). Compute totals (`compute/*`) are left out: the attempts table shows usage."""
    kept = {k: v for k, v in metrics.items() if not k.startswith("compute/")}
    curves = {k: v for k, v in kept.items() if len(v) > 1}
    once = {k: v[-1][1] for k, v in kept.items() if len(v) == 1}
    losses = sorted(k for k in kept if k.rsplit("/", 1)[-1] == "loss" and k in curves)
    drawn = []
    if losses:
        series = [charts.Series(k, kept[k]) for k in losses]
        drawn.append(charts.line_chart("loss", series))
    for k in sorted(curves):
        if k not in losses:
            drawn.append(charts.line_chart(k, [charts.Series(k, curves[k])]))
    return drawn, once


@router.get("/ui/runs/{run_id}/steps/{step}", include_in_schema=False)
def step_page(run_id: str, step: str, request: Request, who: Viewer) -> Response:
    c = client(request)
    status = c.status(run_id)
    attempts = [a for a in status.steps if a.step == step]
    detail = c.step_detail(run_id, step)
    metrics_error = None
    try:
        drawn, once = metric_charts(c.metrics(run_id, step))
    except CairnError as e:
        drawn, once, metrics_error = [], {}, str(e)
    try:
        log = c.logs(run_id, step).logs.get(step, "")
    except NotFound:
        log = ""
    cut = len(log) > LOG_TAIL
    live = status.state not in TERMINAL and attempts[-1].state in ("pending", "running")
    return page(
        request,
        "step.html",
        {
            "run": status,
            "step": step,
            "attempts": attempts,
            "last": attempts[-1],
            "detail": detail,
            "charts": drawn,
            "scores": once,
            "metrics_error": metrics_error,
            "log": log[-LOG_TAIL:] if cut else log,
            "log_cut": cut,
            "live": live,
        },
    )
