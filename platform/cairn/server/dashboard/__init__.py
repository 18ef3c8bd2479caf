"""The web dashboard of `cairn server`. (Placeholder: the pages come next.)"""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter()


def wants_html(request: Request) -> bool:
    """A browser asking for a page (it is sent to the login page rather than a JSON 401)."""
    return request.url.path.startswith("/ui") or request.url.path == "/"
