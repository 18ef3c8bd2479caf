"""`cairn server`: the team's front door — the public API over HTTP with tokens and roles, a web
dashboard, and Prometheus metrics.

| module | what |
|---|---|
| `app.py` | `create_app`: the FastAPI app (OpenAPI at /docs, served offline), error mapping |
| `auth.py` | bearer tokens / the dashboard cookie, roles, who may act on a run |
| `api.py` | the JSON API under /api: one `cairn.Client` call per route |
| `dashboard/` | the web pages (server-rendered, every asset served from here) |
| `metrics.py` | /metrics in Prometheus format, read from Cairn's database |
| `live.py` | whether a recorded endpoint answers now |

It holds no state of its own: runs, tokens and events are in Cairn's database, so a restart
loses nothing, and several processes may serve the same deployment.
"""

from cairn.server.app import create_app

__all__ = ["create_app"]
