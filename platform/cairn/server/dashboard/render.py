"""How the dashboard's pages are rendered: Jinja2 (autoescaping on), filters for times, sizes and
durations, its two static files, and errors as pages rather than JSON.

Everything a page shows is escaped by default; only markup built here from escaped parts (the
SVG of `svg.py` and `charts.py`, a model card rendered with raw HTML disabled) is marked safe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from cairn.errors import CairnError, NotFound
from cairn.results import STATES
from cairn.server.auth import LOCAL_ADMIN

HERE = Path(__file__).parent
STATIC = {p.name: p.read_bytes() for p in (HERE / "static").iterdir() if p.is_file()}
# The pages ask for /ui/static/NAME?v=VERSION, so a browser may keep them for good (a new Cairn
# changes the version).
VERSION = hashlib.sha256(b"".join(STATIC[k] for k in sorted(STATIC))).hexdigest()[:10]
TERMINAL = ("succeeded", "failed", "cancelled")
# The pages load nothing but this server's own files and run no inline script: should some
# text ever slip past escaping, the browser still refuses to run it.
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def ago(iso: str | None, now: datetime | None = None) -> str:
    """'3 min ago' from an ISO timestamp."""
    if not iso:
        return ""
    ts = datetime.fromisoformat(iso)
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    s = ((now or datetime.now(UTC)) - ts).total_seconds()
    for limit, unit, size in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600)):
        if s < limit:
            return f"{max(int(s // size), 0)} {unit} ago"
    return f"{int(s // 86400)} d ago"


def when(iso: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if not iso:
        return ""
    ts = datetime.fromisoformat(iso)
    return (
        (ts if ts.tzinfo else ts.replace(tzinfo=UTC))
        .astimezone(UTC)
        .strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def duration(seconds: float | None) -> str:
    """'1 h 02 min', '3 min 07 s', '4.2 s'."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def size(n: float | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def number(value: Any) -> str:
    """A metric: whole numbers in full with thousands separated, others to 4 digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(ago=ago, when=when, duration=duration, size=size, number=number, pretty=pretty)
env.globals.update(static_version=VERSION, STATES=STATES, TERMINAL=TERMINAL)
templates = Jinja2Templates(env=env)


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """Template `name` with `context`, plus who is logged in (for the header)."""
    who = getattr(request.state, "principal", None)
    if not request.app.state.auth:
        who = LOCAL_ADMIN
    response = templates.TemplateResponse(
        request, name, {"who": who, **context}, status_code=status_code
    )
    response.headers["Content-Security-Policy"] = CSP
    return response


class PageRoute(APIRoute):
    """A page's route: a CairnError (an unknown run, an ambiguous digest) is shown as a page
    with its message, not as the JSON the API answers with."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except CairnError as e:
                code = 404 if isinstance(e, NotFound) else 400
                return page(request, "error.html", {"message": str(e)}, status_code=code)

        return route
