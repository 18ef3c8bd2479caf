"""Logging in to the dashboard: a token typed once becomes an HttpOnly, SameSite=Strict cookie.

The cookie holds the same API token a script sends as a bearer header (`cairn.server.auth` reads
either), so there is no second kind of credential to store or revoke. After logging in the
browser goes back where it was sent from (`next`), which must be a path on this server: an
absolute URL there would make the login page a springboard to any site ("open redirect").
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from cairn.server.auth import COOKIE
from cairn.server.dashboard.render import PageRoute, page

router = APIRouter(route_class=PageRoute)
HOME = "/ui/runs"


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this server, else the runs list."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return HOME
    if any(c in target for c in "\\\r\n\t") or any(ord(c) < 32 for c in target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return HOME
    return target


@router.get("/ui/login", include_in_schema=False)
def login_form(request: Request, next: str = HOME) -> Response:
    if not request.app.state.auth:  # `--no-auth`: everyone is the local admin already
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/ui/login", include_in_schema=False)
def login(
    request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = HOME
) -> Response:
    # Another site's form may not log a browser in as someone else (login CSRF).
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") != str(request.base_url).rstrip("/"):
        raise HTTPException(403, f"a login from {origin} is refused")
    secret = token.strip()
    who = request.app.state.client.authenticate(secret) if secret else None
    if who is None:
        error = "That token is unknown or revoked. An admin creates one with `cairn token create`."
        return page(
            request, "login.html", {"next": safe_next(next), "error": error}, status_code=401
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        secret,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.get("/ui/logout", include_in_schema=False)
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
