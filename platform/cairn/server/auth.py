"""Who a request comes from, and what it may do: bearer tokens (or the dashboard's cookie) and
three nested roles. Locked by default: no token is a 401, too small a role a 403.

The only way without tokens is `--no-auth`, which `cairn server` allows on loopback only; every
request is then the local admin. A dashboard session is the same token in an HttpOnly,
SameSite=Strict cookie; a mutating request that carries only the cookie must also come from the
server's own pages (its Origin, when the browser sends one, is the server's), so no other site
can make a logged-in browser act.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request

from cairn.engine.tokens import Principal

COOKIE = "cairn_token"
LOCAL_ADMIN = Principal("local", "admin")


def secret_of(request: Request) -> tuple[str | None, bool]:
    """(the token a request carries, whether it came as a cookie)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


def principal(request: Request) -> Principal | None:
    """The request's principal, or None when it carries no live token."""
    if not request.app.state.auth:
        return LOCAL_ADMIN
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    secret, by_cookie = secret_of(request)
    if not secret:
        return None
    who = request.app.state.client.authenticate(secret)
    if who is not None and by_cookie and request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("origin")
        if origin and origin.rstrip("/") != str(request.base_url).rstrip("/"):
            raise HTTPException(403, f"a request from {origin} cannot act with this session")
    request.state.principal = who
    return who


def require(role: str) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the request's principal, which must hold at least `role`."""

    def dependency(request: Request) -> Principal:
        who = principal(request)
        if who is None:
            raise HTTPException(
                401,
                "no valid API token: send `Authorization: Bearer TOKEN` (an admin creates one "
                "with `cairn token create NAME --role viewer|submitter|admin`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not who.can(role):
            raise HTTPException(
                403, f"token {who.name} has the {who.role} role; this needs {role} or above"
            )
        return who

    return dependency


def may_act_on(who: Principal, owner: str | None) -> bool:
    """A submitter acts on its own runs only; an admin on anyone's."""
    return who.can("admin") or (who.can("submitter") and owner == who.name)
