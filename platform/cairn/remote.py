"""`RemoteClient`: the public API through a `cairn server` instead of the local database.

`CAIRN_SERVER=URL` and `CAIRN_TOKEN` (or the CLI's `--server`/`--token`) make `cairn.connect()`
return one, and the CLI's commands then talk to the server with the same output and `--json`:
each method returns the same `cairn.results` type as `Client`'s, read back from the server's
JSON. A run started through it (`run`, `resume`) runs on the server's side; `run` and `resume`
wait for it to end, as they do locally, polling its status.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from cairn.errors import CairnError, NotFound, SpecError, SpecIssue
from cairn.results import LineageGraph, LineageNode, RunLogs, RunResult, RunStatus, RunSummary

TERMINAL = ("succeeded", "failed", "cancelled")


class RemoteClient:
    """A handle on the deployment behind a `cairn server` at `url`, acting with `token`."""

    def __init__(self, url: str, token: str | None = None, *, poll: float = 2.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=60.0)
        self.poll = poll

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise CairnError(
                f"cannot reach the Cairn server at {self.url}: {e}; check CAIRN_SERVER "
                "(or --server) and that `cairn server` is running there"
            ) from e
        if r.status_code < 400:
            return (
                r.json()
                if r.headers.get("content-type", "").startswith("application/json")
                else r.text
            )
        try:
            body = r.json()
        except ValueError:
            body = {"error": r.text}
        message = str(body.get("error") or body.get("detail") or body)
        if r.status_code == 404:
            raise NotFound(message)
        if r.status_code == 422 and body.get("issues"):
            raise SpecError([SpecIssue(**i) for i in body["issues"]])
        if r.status_code == 401:
            message += "; set CAIRN_TOKEN (or --token) to a live token"
        raise CairnError(f"{message} (server {self.url}, HTTP {r.status_code})")

    # -- runs --------------------------------------------------------------------------------
    def submit(self, workflow: Any, address: str | None = None, **_: Any) -> str:
        """Hand `workflow` to the server, which runs it (on `address`, its Ray cluster, or its
        own machine); returns the run id at once."""
        body = {"text": workflow.text, "path": str(Path(workflow.path).resolve())}
        if address:
            body["address"] = address
        return str(self._call("POST", "/api/runs", json=body)["run_id"])

    def run(self, workflow: Any, **_: Any) -> RunResult:
        return self.wait(self.submit(workflow)).result()

    def resume(self, run_id: str, **_: Any) -> RunResult:
        new = self._call("POST", f"/api/runs/{run_id}/resume")["run_id"]
        return self.wait(new).result()

    def wait(self, run_id: str) -> RunStatus:
        """Poll until the run ends; its final status."""
        while True:
            status = self.status(run_id)
            if status.state in TERMINAL:
                return status
            time.sleep(self.poll)

    def cancel(self, run_id: str) -> str:
        return str(self._call("POST", f"/api/runs/{run_id}/cancel")["status"])

    def status(self, run_id: str) -> RunStatus:
        return RunStatus.from_dict(self._call("GET", f"/api/runs/{run_id}"))

    def runs(self, limit: int = 20, **filters: Any) -> list[RunSummary]:
        params = {"limit": limit, **{k: v for k, v in filters.items() if v is not None}}
        data = self._call("GET", "/api/runs", params=params)
        return [RunSummary.from_dict(r) for r in data["runs"]]

    def logs(self, run_id: str, step: str | None = None) -> RunLogs:
        params = {"step": step} if step else {}
        return RunLogs.from_dict(self._call("GET", f"/api/runs/{run_id}/logs", params=params))

    # -- lineage -----------------------------------------------------------------------------
    def lineage(self, ref: str) -> LineageNode:
        if Path(ref).exists():  # a bundle or artifact directory here: no server needed
            from cairn.client import Client

            return Client().lineage(ref)
        data = self._call("GET", f"/api/lineage/{ref}", params={"format": "tree"})
        return LineageNode.from_dict(data)

    def lineage_graph(self, ref: str, direction: str = "ancestors") -> LineageGraph:
        if Path(ref).exists():
            from cairn.client import Client

            return Client().lineage_graph(ref, direction)
        params = {"format": "json", "direction": direction}
        return LineageGraph.from_dict(self._call("GET", f"/api/lineage/{ref}", params=params))

    # -- tokens ------------------------------------------------------------------------------
    def create_token(self, name: str, role: str, **_: Any) -> str:
        body = {"name": name, "role": role}
        return str(self._call("POST", "/api/tokens", json=body)["token"])

    def tokens(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/tokens")["tokens"])

    def revoke_token(self, name: str, **_: Any) -> None:
        self._call("DELETE", f"/api/tokens/{name}")


def from_env() -> RemoteClient | None:
    """A RemoteClient when CAIRN_SERVER is set, else None."""
    url = os.environ.get("CAIRN_SERVER")
    return RemoteClient(url, os.environ.get("CAIRN_TOKEN")) if url else None
