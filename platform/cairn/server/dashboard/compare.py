"""Comparing two runs: their steps side by side, and each metric's curves overlaid.

Steps are matched by name. A step whose fingerprints match did the same work (or one run reused
the other's result from the cache), so its curves coincide; the interesting charts are the ones
whose fingerprints differ, which come first.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from cairn.client import Client
from cairn.engine.tokens import Principal
from cairn.errors import CairnError
from cairn.server.auth import require
from cairn.server.dashboard import charts
from cairn.server.dashboard.render import PageRoute, page
from cairn.server.dashboard.runs import last_attempts

router = APIRouter(route_class=PageRoute)
Viewer = Annotated[Principal, Depends(require("viewer"))]


def client(request: Request) -> Client:
    return request.app.state.client  # type: ignore[no-any-return]


def safe_metrics(c: Client, run_id: str, step: str) -> dict[str, list[tuple[int, float]]]:
    try:
        return c.metrics(run_id, step)
    except CairnError:  # a step with no MLflow run (never started): nothing to draw
        return {}


@router.get("/ui/compare", include_in_schema=False)
def compare(request: Request, who: Viewer, a: str = "", b: str = "") -> Response:
    c = client(request)
    a, b = a.strip(), b.strip()
    if not (a and b):
        context = {"a": a, "b": b, "recent": c.runs(20), "rows": [], "drawn": []}
        return page(request, "compare.html", context)
    runs = c.status(a), c.status(b)
    lasts = last_attempts(runs[0]), last_attempts(runs[1])
    names = list(lasts[0]) + [s for s in lasts[1] if s not in lasts[0]]
    rows: list[dict[str, Any]] = []
    for name in names:
        pa, pb = lasts[0].get(name), lasts[1].get(name)
        row: dict[str, Any] = {"step": name, "a": pa, "b": pb, "charts": [], "more": []}
        row["scores"] = []
        row["same"] = bool(pa and pb and pa.fingerprint and pa.fingerprint == pb.fingerprint)
        if pa and pb:
            ma, mb = safe_metrics(c, a, name), safe_metrics(c, b, name)
            for key in sorted(set(ma) | set(mb), key=lambda k: ("loss" not in k, k)):
                if key.startswith("compute/"):
                    continue
                va, vb = ma.get(key, []), mb.get(key, [])
                if len(va) > 1 or len(vb) > 1:
                    series = [charts.Series(f"a {a}", va), charts.Series(f"b {b}", vb)]
                    where = "charts" if "loss" in key.rsplit("/", 1)[-1] else "more"
                    row[where].append(charts.line_chart(f"{name}: {key}", series))
                else:
                    row["scores"].append(
                        (key, va[-1][1] if va else None, vb[-1][1] if vb else None)
                    )
        rows.append(row)
    # What differs first; the losses shown, the other curves one click away.
    drawn = sorted((r for r in rows if r["charts"] or r["more"]), key=lambda r: r["same"])
    return page(
        request,
        "compare.html",
        {"a": a, "b": b, "runs": runs, "rows": rows, "drawn": drawn, "recent": []},
    )
