"""`cairn reproduce`: re-run a release and say whether it made the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import cairn
from cairn.cli.app import JsonOpt, app, claim_stdout, emit, err, fail, out
from cairn.errors import CairnError
from cairn.results import ReproduceReport


@app.command()
def reproduce(
    bundle: Annotated[Path, typer.Argument(help="a release bundle directory")],
    sources: Annotated[
        Path | None,
        typer.Option(
            help="the folder that held the release's workflow file, for raw sources the bundle "
            "does not carry (a release made without `include_sources: true`)"
        ),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(help="the fresh Cairn home to run in (default: a new temporary folder)"),
    ] = None,
    ignore_versions: Annotated[
        bool,
        typer.Option(
            "--ignore-versions",
            help="run even where installed packages differ from the recorded ones",
        ),
    ] = False,
    allow_changed_sources: Annotated[
        bool,
        typer.Option(
            "--allow-changed-sources",
            help="run even where a raw source differs from the recorded one, to see what it "
            "changes downstream",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-run a release's recorded workflow in a fresh Cairn home and compare every artifact.

    The bundle is audited first (its failures are reported; a lineage that does not hold
    together stops it); the packages that change results must be at their
    recorded versions; raw sources come from the bundle (`include_sources: true`), from
    --sources, or from their URIs, each checked by digest. Every data, tokenizer, model,
    checkpoint and eval artifact of the lineage is then compared by content digest, and the
    first that differs is named with its differing files. Exit code 0 only when all are
    bit-identical.

    Example (the quickstart's release): cairn reproduce
    .cairn/store/release/release/FINGERPRINT/release/quickstart
    """
    from cairn.cli.display import PlainDisplay

    if as_json:
        claim_stdout()
    try:
        report = cairn.reproduce(
            bundle,
            home=home,
            sources=sources,
            ignore_versions=ignore_versions,
            allow_changed_sources=allow_changed_sources,
            display=PlainDisplay(),
        )
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit(report.to_dict())
    else:
        _print(report)
    if not report.ok:
        raise typer.Exit(1)


def _print(report: ReproduceReport) -> None:
    from rich.markup import escape

    out.print(f"reproduction of {report.bundle} (in {report.home})", soft_wrap=True)
    for problem in report.audit_problems:
        out.print(f"  [red]audit:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    for p, (recorded, installed) in report.versions.items():
        err.print(f"  [yellow]![/] {p}: recorded {recorded}, installed {installed}")
    for a in report.artifacts:
        mark = "[green]✓[/]" if a.same else "[red]✗[/]"
        how = f" (from {a.origin})" if a.origin else ""
        out.print(
            f"  {mark} {escape(a.name):<28} {a.type:<12} {a.recorded[:12]}{escape(how)}",
            highlight=False,
            soft_wrap=True,
        )
        for f in a.differs[:20]:
            out.print(f"      [red]{escape(f)}[/]", highlight=False, soft_wrap=True)
        if len(a.differs) > 20:
            out.print(f"      … and {len(a.differs) - 20} more", highlight=False)
    first = report.first_difference
    if report.stopped:
        out.print(f"[red]not re-run:[/] {escape(report.stopped)}", soft_wrap=True)
    elif first:
        out.print(
            f"[red]differs:[/] first at {escape(first.name)} (its files above); the run is "
            f"kept in {report.home}",
            soft_wrap=True,
        )
    else:
        out.print("[green]bit-identical[/]: every artifact has its recorded digest")
