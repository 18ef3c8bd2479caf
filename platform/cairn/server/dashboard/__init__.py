"""The web dashboard of `cairn server`: server-rendered pages under /ui, for a person who would
otherwise read tables in a terminal.

| module | holds |
|---|---|
| `session.py` | logging in and out (the token as an HttpOnly cookie; no open redirect) |
| `runs.py` | the runs list, a run (its DAG, refreshed live) and a step (attempts, log, charts) |
| `compare.py` | two runs' metrics overlaid |
| `artifacts.py` | an artifact (files, lineage both ways) and the endpoints |
| `releases.py` | releases: model card, files, audit, checkpoints, lineage |
| `layout.py`, `svg.py`, `charts.py` | the pictures, drawn here as SVG (no JS library) |
| `render.py` | templates, filters, the static files, errors as pages |

Everything it needs ships in the package (templates/, static/): it works with no internet.
"""

from __future__ import annotations

import contextlib
import threading

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from cairn.client import Client
from cairn.server.dashboard import artifacts, compare, releases, runs, session
from cairn.server.dashboard.render import STATIC

router = APIRouter(include_in_schema=False)
for part in (session, runs, compare, artifacts, releases):
    router.include_router(part.router)

TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@router.get("/")
def home() -> Response:
    return RedirectResponse("/ui/runs", status_code=307)


@router.get("/ui")
def ui() -> Response:
    return RedirectResponse("/ui/runs", status_code=307)


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    """The stylesheet and the script; a page names them with their version, so they are
    cached for good. Open to all: the login page needs them, and they hold nothing secret."""
    if name not in STATIC:
        raise HTTPException(404, f"no static file {name}")
    return Response(
        STATIC[name],
        media_type=TYPES.get(name[name.rfind(".") :], "application/octet-stream"),
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


def warm(client: Client) -> None:
    """Import and start MLflow's client in the background (`cairn server` does on start): it
    takes seconds, and the first page with a chart would otherwise wait for it."""
    from cairn.tracking.mlflow import reader

    def start() -> None:
        # A failure here is not lost: the page that needs MLflow meets it again and shows it.
        with contextlib.suppress(Exception):
            reader(client.settings.mlflow_uri, client.settings.mlflow_artifacts)

    threading.Thread(target=start, name="cairn-warm-mlflow", daemon=True).start()


def wants_html(request: Request) -> bool:
    """A browser asking for a page (it is sent to the login page rather than a JSON 401)."""
    return request.url.path.startswith("/ui") or request.url.path == "/"
