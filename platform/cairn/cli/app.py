"""The `cairn` Typer app and the output conventions every command follows.

Every command that reports takes `--json` (one JSON object on stdout, nothing else there).
Errors the user can fix are printed without a traceback and exit with 2 (bad input) or 1
(anything else that failed, such as a run). Commands parse, call the public API (`cairn.Client`)
and render what it returns; none reaches below it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from cairn.errors import CairnError, SpecError
from cairn.results import AuditReport

app = typer.Typer(
    help="Cairn: run a language model's whole life as one workflow on Ray, with lineage.\n\n"
    "Start with `cairn validate workflows/quickstart.yaml`, then `cairn run` it. State lives "
    "under $CAIRN_HOME (default ./.cairn) unless CAIRN_DATABASE_URL, MLFLOW_TRACKING_URI or "
    "CAIRN_STORE point elsewhere.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


@app.callback()
def deployment(
    server: Annotated[
        str | None,
        typer.Option(
            envvar="CAIRN_SERVER",
            help="a `cairn server` URL: runs, status, logs, lineage, submit, cancel and resume "
            "then go through it instead of the local database",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CAIRN_TOKEN",
            show_default=False,
            help="API token for --server (prefer the CAIRN_TOKEN variable: a command line is "
            "visible to other users of the machine)",
        ),
    ] = None,
) -> None:
    """Where the commands act: the local deployment, or a `cairn server`."""
    if server:
        os.environ["CAIRN_SERVER"] = server
    if token:
        os.environ["CAIRN_TOKEN"] = token


db_app = typer.Typer(help="Cairn's own database (schema migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]
RunArg = Annotated[str, typer.Argument(help="run id (see `cairn runs`)")]

_json_out: Any = None


def claim_stdout() -> None:
    """Reserve stdout for the one JSON object of a `--json` run.

    Ray prints its own messages (e.g. "(raylet) A worker died…") to the driver's stdout, at any
    time, even after the run: file descriptor 1 now points at stderr for the rest of the
    process, and `emit` writes to a duplicate of the real stdout.
    """
    global _json_out
    if _json_out is None:
        sys.stdout.flush()
        _json_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)


def emit(data: Any) -> None:
    stream = _json_out or sys.stdout
    stream.write(json.dumps(data, indent=2, default=str) + "\n")
    stream.flush()


def fail(e: CairnError, as_json: bool) -> NoReturn:
    code = 2 if isinstance(e, SpecError) else 1
    if as_json:
        payload: dict[str, Any] = {"error": str(e)}
        if e.run_id:  # the run it ended: its steps and logs are there to look at
            payload["run_id"] = e.run_id
        if isinstance(e, SpecError):
            payload["issues"] = [i.__dict__ for i in e.issues]
        emit(payload)
    else:
        err.print("[bold red]error:[/] ", end="")
        err.print(str(e), markup=False, highlight=False)
        if e.run_id:
            err.print(f"run {e.run_id}: see `cairn status {e.run_id}`", highlight=False)
    raise typer.Exit(code)


def print_audit(report: AuditReport) -> None:
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
