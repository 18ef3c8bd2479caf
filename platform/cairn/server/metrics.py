"""/metrics in Prometheus format (prometheus-client), read from Cairn's database at each scrape.

(Placeholder: filled in with run, step, cache, store and audit metrics.)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cairn.engine.tokens import Principal
from cairn.server.auth import require

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(who: Annotated[Principal, Depends(require("viewer"))]) -> Response:
    return Response(generate_latest(CollectorRegistry()), media_type=CONTENT_TYPE_LATEST)
