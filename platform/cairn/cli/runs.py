"""The commands about runs: validate, run, submit, status, runs, logs, cancel, resume."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

import cairn
from cairn.cli.app import JsonOpt, RunArg, app, claim_stdout, emit, err, fail, out, print_audit
from cairn.errors import CairnError
from cairn.results import Attempt, AuditReport, RunResult

WorkflowArg = Annotated[Path, typer.Argument(help="workflow YAML file")]


@app.command()
def validate(file: WorkflowArg, as_json: JsonOpt = False) -> None:
    """Check a workflow file without running anything (writes nothing anywhere).

    Lists the steps and the external sources (data, imported models) with the licence the
    workflow states for each: write an input as `{source: ./base-model, license: apache-2.0}`
    to state it; a release says "not declared" for a source without one."""
    try:
        wf = cairn.load_workflow(file)
    except CairnError as e:
        fail(e, as_json)
    steps = [{"step": n, "kind": s.kind, "after": s.upstream()} for n, s in wf.steps.items()]
    sources = [
        {"step": n, "input": slot, "source": r.text, "license": r.license}
        for n, s in wf.steps.items()
        for slot, refs in s.inputs.items()
        for r in refs
        if r.external
    ]
    if as_json:
        emit({"valid": True, "workflow": wf.name, "steps": steps, "sources": sources})
        return
    out.print(f"[green]✓[/] {file}: workflow [bold]{wf.name}[/] is valid, {len(steps)} steps")
    for st in steps:
        after = f"  (after {', '.join(st['after'])})" if st["after"] else ""
        out.print(f"  {st['step']:<16} {st['kind']}{after}")
    if sources:
        out.print("external sources, with the licence stated on the input:")
    width = max((len(f"{x['step']}.{x['input']}") for x in sources), default=0)
    for src in sources:
        where = f"{src['step']}.{src['input']}"
        said = f"  licence {escape(str(src['license']))}" if src["license"] else ""
        out.print(f"  {where:<{width}}  {escape(str(src['source'])[:200])}{said}")


@app.command()
def run(
    file: Annotated[
        Path | None,
        typer.Argument(help="workflow YAML file (optional with --run-id: the run's recorded one)"),
    ] = None,
    as_json: JsonOpt = False,
    run_id: Annotated[
        str | None,
        typer.Option(help="adopt this pending run id (used by submit and by `cairn server`)"),
    ] = None,
    keep_serving: Annotated[
        bool,
        typer.Option(
            "--keep-serving", help="leave the endpoints of `serve` steps running after the run"
        ),
    ] = False,
    audit_releases: Annotated[
        bool,
        typer.Option("--audit", help="run `cairn audit` on every release the run produced"),
    ] = False,
) -> None:
    """Run a workflow on the embedded default (local Ray) or on RAY_ADDRESS.

    Cached steps (same fingerprint, verified artifact) are not re-run. Progress goes to stderr;
    with `--json` stdout gets one object: run id, status, and each step's state and artifacts.
    A `serve` step answers a smoke request and stops its server unless `--keep-serving`.
    """
    from cairn.cli.display import PlainDisplay, RichDisplay

    if as_json:
        claim_stdout()
    try:
        if file is None and run_id is None:
            raise CairnError("give a workflow file (or --run-id of a pending run)")
        wf = cairn.load_workflow(file) if file else cairn.Client().recorded_workflow(str(run_id))
        if keep_serving:  # a runtime choice: not part of any step's fingerprint
            for step in wf.steps.values():
                if hasattr(step.config, "keep_serving"):
                    step.config.keep_serving = True
        if err.is_terminal and not as_json:
            with RichDisplay(["run", *wf.steps], err) as display:
                result = cairn.run(wf, run_id=run_id, display=display)
        else:
            result = cairn.run(wf, run_id=run_id, display=PlainDisplay())
    except CairnError as e:
        fail(e, as_json)
    report_result(result, as_json, audit_releases)


def report_result(result: RunResult, as_json: bool, audit_releases: bool = False) -> None:
    """A finished run: its steps, releases (audited on request), data cards and kept servers."""
    try:
        audits: list[AuditReport] = (
            [recorded_audit(p) for p in result.releases] if audit_releases else []
        )
    except CairnError as problem:  # a release that cannot be read back (store unreachable, ...)
        fail(CairnError(f"run {result.run_id} {result.state}, but its audit: {problem}"), as_json)
    if as_json:
        data = result.to_dict()
        data["releases"] = result.releases
        data["audits"] = [a.to_dict() for a in audits]
        emit(data)
    else:
        colour = "green" if result.ok else "red"
        out.print(f"run [bold]{result.run_id}[/] [{colour}]{result.state}[/]")
        for name, r in result.steps.items():
            arts = ", ".join(f"{k} {v.digest[:12]}" for k, v in r.artifacts.items())
            out.print(f"  {name:<16} {r.state:<10} {arts}  {r.error or ''}".rstrip())
        if result.error:
            err.print(f"[red]{result.error}[/]", markup=True, highlight=False)
            err.print(
                f"details: cairn logs {result.run_id}; retry with: cairn resume {result.run_id}"
            )
        for e in result.artifacts("endpoint"):
            if e.metadata.get("kept"):
                meta = e.metadata
                out.print(
                    f"serving {meta.get('model_digest', '')[:12]} at [bold]{meta.get('base_url')}"
                    f"[/] ({meta.get('engine')}, pid {meta.get('pid')}); stop it with: "
                    f"cairn stop {e.digest[:12]}",
                    soft_wrap=True,
                )
        for name, r in result.steps.items():
            data_art = r.artifacts.get("dataset")
            if data_art and (Path(data_art.uri) / "DATA_CARD.md").is_file():
                card = Path(data_art.uri) / "DATA_CARD.md"
                out.print(f"data card of {name}: [bold]{card}[/]", soft_wrap=True)
        for path in result.releases:
            out.print(f"release: [bold]{path}[/]", soft_wrap=True)
        for a in audits:
            print_audit(a)
    if not result.ok or not all(a.ok for a in audits):
        raise typer.Exit(1)


def recorded_audit(bundle: str) -> AuditReport:
    """`cairn audit` of a release the run made, recorded in the deployment's event log (and
    counted by /metrics). Through a server (CAIRN_SERVER) the audit runs here, unrecorded: this
    process cannot write the server's database."""
    api = cairn.connect()
    return api.audit_release(bundle) if isinstance(api, cairn.Client) else cairn.audit(bundle)


@app.command()
def submit(
    file: WorkflowArg,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray dashboard address, e.g. http://HEAD:8265 (through CAIRN_SERVER: optional, "
            "the server's cluster or machine by default)"
        ),
    ] = None,
    as_json: JsonOpt = False,
    python: Annotated[
        str | None,
        typer.Option(help="python on the cluster (default: ours for a local head, else `python`)"),
    ] = None,
    working_dir: Annotated[
        str | None, typer.Option(help="directory to upload as the job's working dir")
    ] = None,
) -> None:
    """Run a workflow on a Ray cluster through the Ray Jobs API (submission id = run id), or
    hand it to the `cairn server` at CAIRN_SERVER, which runs it for you."""
    try:
        wf = cairn.load_workflow(file)
        run_id = cairn.submit(wf, address, python=python, working_dir=working_dir)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit({"run_id": run_id, "status": "pending", "address": address})
    else:
        out.print(f"submitted run [bold]{run_id}[/] to {address or os.environ['CAIRN_SERVER']}")
        out.print(f"  follow it: cairn status {run_id}   ·   cairn logs {run_id}")


@app.command()
def status(run_id: RunArg, as_json: JsonOpt = False) -> None:
    """A run's state, its steps (attempts, timings, artifacts) and its event log."""
    try:
        st = cairn.status(run_id)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit(st.to_dict())
        return
    state = st.state
    if state == "running" and st.driver_alive is False:
        state += " [red](driver lost: no heartbeat — `cairn resume` it)[/]"
    out.print(f"run [bold]{st.run_id}[/] of [bold]{st.workflow}[/]: {state}")
    if st.ray_job_status:
        out.print(f"  ray job {run_id} at {st.ray_address}: {st.ray_job_status}")
    if st.resumed_from:
        out.print(f"  resumed from {st.resumed_from}")
    t = Table(box=None, header_style="bold")
    for col in ("step", "kind", "try", "state", "seconds", "artifacts", "error"):
        t.add_column(col)
    for a in st.steps:
        arts = ", ".join(f"{k} {v.digest[:12]}" for k, v in a.artifacts.items())
        secs = f"{a.seconds:.1f}" if a.seconds is not None else ""
        t.add_row(a.step, a.kind, str(a.attempt), a.state, secs, arts, (a.error or "")[:80])
    out.print(t)
    _print_compute(st.steps)
    out.print("[bold]events[/]")
    for ev in st.events[-15:]:
        out.print(
            f"  {(ev.ts or '')[11:19]} {ev.type:<15} {ev.message}", markup=False, highlight=False
        )


def _print_compute(steps: list[Attempt]) -> None:
    """Per attempt: what it held (worker/CPU/GPU-seconds) and used (CPU time, peak memory)."""
    from cairn.stage.usage import human_bytes

    rows = [a for a in steps if a.usage]
    if not rows:
        return
    t = Table(box=None, header_style="bold", title="compute", title_justify="left")
    for col in ("step", "try", "worker-s", "CPU-s", "GPU-s", "CPU time", "peak memory per worker"):
        t.add_column(col, justify="left" if col in ("step", "peak memory per worker") else "right")
    for a in rows:
        u = a.usage or {}
        peaks = " ".join(
            f"{w['role'] if w['rank'] is None else 'rank ' + str(w['rank'])}="
            f"{human_bytes(w['peak_rss_bytes'])}"
            for w in u["workers"]
        )
        t.add_row(
            a.step,
            str(a.attempt),
            f"{u['worker_seconds']:.1f}",
            f"{u['cpu_seconds']:.1f}",
            f"{u['gpu_seconds']:.1f}",
            f"{u['cpu_time_seconds']:.1f}",
            peaks,
        )
    out.print(t)


@app.command()
def runs(
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List recent runs."""
    try:
        found = cairn.runs(limit)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit({"runs": [r.to_dict() for r in found]})
        return
    t = Table(box=None, header_style="bold")
    for col in ("run", "workflow", "status", "created", "seconds"):
        t.add_column(col)
    for r in found:
        t.add_row(r.run_id, r.workflow, r.state, (r.created_at or "")[:19], f"{r.seconds or 0:.1f}")
    out.print(t)


@app.command()
def logs(
    run_id: RunArg,
    step: Annotated[
        str | None, typer.Argument(help="one step (default: the run's own log and every step's)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a run's logs: engine events and what each step reported; the Ray job's driver log if submitted."""
    try:
        found = cairn.logs(run_id, step)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit(found.to_dict())
        return
    for name, text in found.logs.items():
        out.print(f"[bold]── {name} ──[/]")
        sys.stdout.write(text)


@app.command()
def cancel(run_id: RunArg, as_json: JsonOpt = False) -> None:
    """Cancel a run: running steps are stopped, pending ones never start."""
    try:
        state = cairn.cancel(run_id)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit({"run_id": run_id, "status": state})
    else:
        out.print(f"run {run_id}: {state}")


@app.command()
def resume(run_id: RunArg, as_json: JsonOpt = False) -> None:
    """Start a new run linked to RUN; steps it finished come from the cache, the rest run."""
    from cairn.cli.display import PlainDisplay

    if as_json:
        claim_stdout()
    try:
        result = cairn.resume(run_id, display=PlainDisplay())
    except CairnError as e:
        fail(e, as_json)
    report_result(result, as_json)
