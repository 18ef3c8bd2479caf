"""The server's door: locked without a token, roles enforced, tokens hashed, mutations logged."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from cairn.db.models import ApiToken, Event, Run
from cairn.errors import CairnError
from cairn.server.app import check_bind
from tests.unit.server.conftest import Deployment


def test_no_token_is_401_everywhere_but_health(deployment: Deployment) -> None:
    http = deployment.http
    for path in ("/api/runs", f"/api/runs/{deployment.run.run_id}", "/api/tokens", "/metrics"):
        r = http.get(path)
        assert r.status_code == 401, path
        assert "cairn token create" in r.json()["error"]
    assert http.get("/api/runs", headers={"Authorization": "Bearer cairn_wrong"}).status_code == 401
    assert http.get("/healthz").json() == {"status": "ok"}


def test_viewer_reads_but_cannot_submit_or_cancel(deployment: Deployment) -> None:
    http, run_id = deployment.http, deployment.run.run_id
    r = http.get("/api/runs", headers=deployment.as_("viewer"))
    assert r.status_code == 200 and r.json()["runs"][0]["run_id"] == run_id
    body = {"text": deployment.workflow.read_text(), "path": str(deployment.workflow)}
    r = http.post("/api/runs", json=body, headers=deployment.as_("viewer"))
    assert r.status_code == 403 and "viewer role" in r.json()["error"]
    r = http.post(f"/api/runs/{run_id}/cancel", headers=deployment.as_("viewer"))
    assert r.status_code == 403
    assert http.get("/api/tokens", headers=deployment.as_("viewer")).status_code == 403


def test_submitter_runs_its_own_and_only_its_own(deployment: Deployment) -> None:
    http = deployment.http
    body = {"text": deployment.workflow.read_text(), "path": str(deployment.workflow)}
    r = http.post("/api/runs", json=body, headers=deployment.as_("submitter"))
    assert r.status_code == 201, r.text
    mine = r.json()["run_id"]
    status = http.get(f"/api/runs/{mine}", headers=deployment.as_("viewer")).json()
    assert status["owner"] == "submitter" and status["status"] == "succeeded"
    assert any(e["message"].endswith("created by submitter") for e in status["events"])
    # The first run was started from the command line: someone else's.
    other = deployment.run.run_id
    r = http.post(f"/api/runs/{other}/resume", headers=deployment.as_("submitter"))
    assert r.status_code == 403 and "belongs to" in r.json()["error"]
    r = http.post(f"/api/runs/{other}/cancel", headers=deployment.as_("submitter"))
    assert r.status_code == 403
    # Its own: allowed (the run has ended, so cancel reports the state it ended in).
    r = http.post(f"/api/runs/{mine}/cancel", headers=deployment.as_("submitter"))
    assert r.json() == {"run_id": mine, "status": "succeeded"}
    r = http.post(f"/api/runs/{mine}/resume", headers=deployment.as_("submitter"))
    assert r.status_code == 201 and r.json()["resumed_from"] == mine
    # An admin acts on anyone's.
    r = http.post(f"/api/runs/{other}/resume", headers=deployment.as_("admin"))
    assert r.status_code == 201


def test_cancel_is_recorded_with_the_tokens_name(deployment: Deployment) -> None:
    client = deployment.client
    run_id = client.engine.create_run(
        client.recorded_workflow(deployment.run.run_id), owner="submitter"
    )
    r = deployment.http.post(f"/api/runs/{run_id}/cancel", headers=deployment.as_("submitter"))
    # Just created: its driver may still be starting, so the request waits for it.
    assert r.json()["status"] == "cancelling"
    with client.engine.sessions() as s:
        ev = s.scalars(
            select(Event).where(Event.run_id == run_id, Event.type == "cancel_requested")
        ).one()
        assert ev.message == "cancel requested by submitter" and ev.data == {"by": "submitter"}
        assert s.get_one(Run, run_id).cancel_requested


def test_tokens_are_stored_hashed_and_revocable(deployment: Deployment) -> None:
    client, http = deployment.client, deployment.http
    r = http.post(
        "/api/tokens", json={"name": "ci", "role": "submitter"}, headers=deployment.as_("admin")
    )
    assert r.status_code == 201
    secret = r.json()["token"]
    assert secret.startswith("cairn_") and len(secret) > 40
    with client.engine.sessions() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.name == "ci")).one()
        assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        assert row.created_by == "admin"
    db_bytes = (client.settings.home / "cairn.db").read_bytes()
    for known in (secret, *deployment.tokens.values()):
        assert known.encode() not in db_bytes
    listed = http.get("/api/tokens", headers=deployment.as_("admin")).json()["tokens"]
    assert "ci" in {t["name"] for t in listed} and secret not in str(listed)
    ci = {"Authorization": f"Bearer {secret}"}
    assert http.get("/api/runs", headers=ci).status_code == 200
    assert http.delete("/api/tokens/ci", headers=deployment.as_("admin")).status_code == 200
    assert http.get("/api/runs", headers=ci).status_code == 401
    with client.engine.sessions() as s:
        kinds = [
            (e.type, e.data.get("by"))
            for e in s.scalars(select(Event).where(Event.run_id.is_(None)))
        ]
    assert ("token_created", "admin") in kinds and ("token_revoked", "admin") in kinds


def test_token_names_and_roles_are_checked(deployment: Deployment) -> None:
    with pytest.raises(CairnError, match="role 'root'"):
        deployment.client.create_token("x", "root")
    with pytest.raises(CairnError, match="exists"):
        deployment.client.create_token("viewer", "viewer")
    with pytest.raises(CairnError, match="token name"):
        deployment.client.create_token("../etc", "viewer")


def test_no_auth_binds_loopback_only() -> None:
    check_bind("127.0.0.1", auth=False)
    check_bind("::1", auth=False)
    check_bind("0.0.0.0", auth=True)
    for host in ("0.0.0.0", "10.1.2.3", "::", "example.org"):
        with pytest.raises(CairnError, match="--no-auth refuses"):
            check_bind(host, auth=False)


def test_dashboard_cookie_cannot_act_for_another_site(deployment: Deployment) -> None:
    http, run_id = deployment.http, deployment.run.run_id
    http.cookies.set("cairn_token", deployment.tokens["admin"])
    r = http.post(f"/api/runs/{run_id}/cancel", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = http.post(f"/api/runs/{run_id}/cancel", headers={"Origin": "http://testserver"})
    assert r.status_code == 200
