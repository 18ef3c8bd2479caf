"""Whether a recorded endpoint is serving now: the dashboard and the API show live endpoints.

An endpoint artifact records where its server listened (`base_url`) and, when it was kept, the
pid that serves it; only a kept one can be live, and only if its health check answers now.
"""

from __future__ import annotations

import urllib.request
from typing import Any


def endpoint_health(meta: dict[str, Any], timeout: float = 0.5) -> dict[str, Any]:
    """{"live": bool}: a kept endpoint whose `/health` answers 200 within `timeout`."""
    base = meta.get("base_url")
    if not meta.get("kept") or not base:
        return {"live": False}
    url = str(base).rstrip("/").removesuffix("/v1") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (our own endpoint)
            return {"live": r.status == 200}
    except OSError:
        return {"live": False}
