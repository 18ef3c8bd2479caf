"""The FastAPI app of `cairn server`, and `serve`, which runs it with uvicorn.

OpenAPI's pages (/docs, /redoc) come from `fastapi-offline`, which ships Swagger UI's assets in
the wheel: FastAPI's own /docs loads them from a CDN, which a cluster without internet lacks.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi_offline import FastAPIOffline

from cairn.client import Client
from cairn.errors import CairnError, NotFound, SpecError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def create_app(
    client: Client | None = None, *, auth: bool = True, ray_address: str | None = None
) -> FastAPI:
    """The server's app over `client`'s deployment. `auth=False` makes every request the local
    admin (only ever bound to loopback: `check_bind`). `ray_address` is where submissions go
    (a Ray cluster's dashboard); without it they run in driver processes on this machine."""
    from cairn.server import api, dashboard, metrics

    app: FastAPI = FastAPIOffline(
        title="Cairn",
        summary="Runs, lineage, releases and endpoints of one Cairn deployment.",
        version="1",
    )
    app.state.client = client or Client()
    # Open the database now (migrations included), once: a wrong URL fails at start with Cairn's
    # message, and request threads never race to build the engine.
    app.state.client.engine  # noqa: B018
    app.state.auth = auth
    app.state.ray_address = ray_address
    app.include_router(api.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)

    @app.exception_handler(CairnError)
    def cairn_error(request: Request, e: CairnError) -> JSONResponse:
        code = 404 if isinstance(e, NotFound) else 422 if isinstance(e, SpecError) else 400
        body: dict[str, Any] = {"error": str(e)}
        if isinstance(e, SpecError):
            body["issues"] = [i.__dict__ for i in e.issues]
        return JSONResponse(body, status_code=code)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, e: HTTPException) -> Any:
        if e.status_code == 401 and dashboard.wants_html(request):
            return RedirectResponse(f"/ui/login?next={request.url.path}", status_code=303)
        return JSONResponse({"error": e.detail}, status_code=e.status_code, headers=e.headers)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def check_bind(host: str, auth: bool) -> None:
    """`--no-auth` serves loopback only: anything else is an open door to the cluster."""
    if auth:
        return
    try:
        loopback = host in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise CairnError(
            f"--no-auth refuses to listen on {host}: without tokens anyone who reaches it can "
            "submit and cancel runs. Bind 127.0.0.1, or drop --no-auth and give people tokens "
            "(`cairn token create NAME --role viewer`)"
        )


def serve(app: FastAPI, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
