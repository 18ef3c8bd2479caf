"""The dashboard's pages over the toy deployment: each renders what the run holds, a session is an
HttpOnly SameSite=Strict cookie, nothing redirects off the site, a viewer gets no action
buttons, and names, logs and cards from users are escaped wherever they appear."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cairn.server import create_app
from cairn.server.dashboard.session import safe_next
from cairn.workflow import load_workflow
from tests.unit.server.conftest import Deployment

HOSTILE = "<img src=x onerror=alert(1)>"


def page(d: Deployment, path: str, role: str | None = "viewer") -> str:
    r = d.http.get(path, headers=d.as_(role), follow_redirects=False)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def digest_of(d: Deployment, step: str, output: str) -> str:
    return d.run.steps[step].artifacts[output].digest


def test_every_page_renders_the_toy_run(deployment: Deployment) -> None:
    d, run_id = deployment, deployment.run.run_id
    runs = page(d, "/ui/runs")
    assert f'href="/ui/runs/{run_id}"' in runs and "toy" in runs and "succeeded" in runs

    run = page(d, f"/ui/runs/{run_id}")
    dag = re.search(r'<svg class="dag[^"]*".*?</svg>', run, re.S)
    assert dag, "the run page draws its DAG"
    for step in ("count", "fit"):
        assert f'href="/ui/runs/{run_id}/steps/{step}"' in dag.group(0)
    assert dag.group(0).count("marker-end=") == 1  # one edge: count → fit
    assert "s-succeeded" in dag.group(0)
    assert "data-live" not in run  # a finished run is not refreshed
    live = page(d, f"/ui/runs/{run_id}/live")
    assert "<html" not in live and 'data-finished="true"' in live and '<svg class="dag' in live

    step = page(d, f"/ui/runs/{run_id}/steps/fit")
    assert '<svg class="chart"' in step and "<polyline" in step  # loss at steps 0, 1, 2
    assert digest_of(d, "fit", "model")[:16] in step
    assert digest_of(d, "count", "dataset")[:16] in step  # its input: part of its fingerprint
    assert "&#34;width&#34;: 4" in step  # the config (JSON, escaped)
    count = page(d, f"/ui/runs/{run_id}/steps/count")
    assert "counted 3 lines" in count  # its log
    assert re.search(r"<td>lines</td><td class=\"num\">3</td>", count)  # a metric logged once

    model = page(d, f"/ui/artifacts/{digest_of(d, 'fit', 'model')}")
    assert 'id="ancestors"' in model and "raw source" in model and "weights.bin" in model
    dataset = page(d, f"/ui/artifacts/{digest_of(d, 'count', 'dataset')[:12]}")  # a prefix
    assert 'id="descendants"' in dataset

    compare = page(d, f"/ui/compare?a={run_id}&b={run_id}")
    assert "same fingerprint" in compare and "<polyline" in compare
    assert "No releases yet" in page(d, "/ui/releases")
    assert "No endpoints yet" in page(d, "/ui/endpoints")


def test_a_missing_run_or_artifact_is_a_page_saying_so(deployment: Deployment) -> None:
    r = deployment.http.get("/ui/runs/r-nope", headers=deployment.as_("viewer"))
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    assert "no run r-nope" in r.text
    r = deployment.http.get("/ui/artifacts/ffff", headers=deployment.as_("viewer"))
    assert r.status_code == 404 and "no artifact with digest ffff" in r.text
    r = deployment.http.get("/ui/runs?state=bogus", headers=deployment.as_("viewer"))
    assert r.status_code == 400 and "choose one of" in r.text


def test_the_runs_list_filters_and_pages(deployment: Deployment) -> None:
    d = deployment
    for _ in range(2):
        d.client.engine.create_run(load_workflow(d.workflow), owner="submitter")
    assert page(d, "/ui/runs?state=pending").count('class="state s-pending"') == 2
    assert d.run.run_id not in page(d, "/ui/runs?owner=submitter")
    assert d.run.run_id in page(d, "/ui/runs?workflow=toy&state=succeeded")
    assert "No runs match" in page(d, "/ui/runs?workflow=other")
    monkey = page(d, "/ui/runs?offset=2")
    assert d.run.run_id in monkey and "Newer" in monkey and "Older" not in monkey


def test_login_sets_an_httponly_strict_cookie_and_goes_back(deployment: Deployment) -> None:
    d = deployment
    r = d.http.post(
        "/ui/login",
        data={"token": d.tokens["viewer"], "next": f"/ui/runs/{d.run.run_id}"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/ui/runs/{d.run.run_id}"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"cairn_token={d.tokens['viewer']};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here: a Secure cookie would never come back
    runs = d.http.get("/ui/runs")  # the cookie alone is the session now
    assert runs.status_code == 200 and 'id="who">viewer <span class="role">viewer' in runs.text
    out = d.http.get("/ui/logout", follow_redirects=False)
    assert out.status_code == 303 and 'cairn_token=""' in out.headers["set-cookie"]

    https = TestClient(create_app(d.client), base_url="https://testserver")
    r = https.post("/ui/login", data={"token": d.tokens["viewer"]}, follow_redirects=False)
    assert "Secure" in r.headers["set-cookie"] and r.headers["location"] == "/ui/runs"


def test_a_wrong_token_or_another_sites_form_logs_nobody_in(deployment: Deployment) -> None:
    r = deployment.http.post("/ui/login", data={"token": "cairn_wrong"}, follow_redirects=False)
    assert r.status_code == 401 and "unknown or revoked" in r.text
    assert "set-cookie" not in r.headers
    r = deployment.http.post(
        "/ui/login",
        data={"token": deployment.tokens["admin"]},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/ui",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/ui/runs\r\nLocation: https://evil.example",
        "",
    ],
)
def test_login_never_sends_a_browser_off_the_site(deployment: Deployment, target: str) -> None:
    assert safe_next(target) == "/ui/runs"
    r = deployment.http.post(
        "/ui/login",
        data={"token": deployment.tokens["viewer"], "next": target},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/ui/runs"
    form = deployment.http.get("/ui/login", params={"next": target})
    assert 'name="next" value="/ui/runs"' in form.text


def test_a_page_without_a_session_sends_the_browser_to_log_in(deployment: Deployment) -> None:
    path = f"/ui/runs/{deployment.run.run_id}"
    r = deployment.http.get(path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/login?next={path}"
    r = deployment.http.get("/", follow_redirects=True)
    assert r.url.path == "/ui/login" and 'name="token"' in r.text
    assert deployment.http.get("/api/runs").status_code == 401  # the API still answers JSON
    css = deployment.http.get("/ui/static/dashboard.css")  # the login page needs it
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert deployment.http.get("/ui/static/../app.py").status_code == 404
    login = deployment.http.get("/ui/login")
    assert "script-src" not in login.headers["content-security-policy"]  # 'self' only
    assert login.headers["content-security-policy"].startswith("default-src 'self'")


def test_without_auth_everyone_is_the_local_admin(deployment: Deployment) -> None:
    http = TestClient(create_app(deployment.client, auth=False))
    r = http.get("/ui/login?next=/ui/releases", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/releases"
    runs = http.get("/ui/runs").text
    assert 'id="who">local <span class="role">admin' in runs and "Log out" not in runs


def test_only_who_may_act_sees_the_buttons(deployment: Deployment) -> None:
    d = deployment
    mine = d.client.engine.create_run(load_workflow(d.workflow), owner="submitter")
    theirs = d.client.engine.create_run(load_workflow(d.workflow), owner="someone-else")
    pending = page(d, f"/ui/runs/{mine}")
    assert 'data-live="/ui/runs/' in pending  # not finished: refreshed
    assert "No step has started yet." in pending and "toy_fit · pending" in pending
    assert 'id="cancel"' not in page(d, f"/ui/runs/{mine}", "viewer")
    assert 'id="cancel"' in page(d, f"/ui/runs/{mine}", "submitter")
    assert 'id="cancel"' not in page(d, f"/ui/runs/{theirs}", "submitter")
    assert 'id="cancel"' in page(d, f"/ui/runs/{theirs}", "admin")
    assert 'id="cancel"' not in page(d, f"/ui/runs/{mine}/live", "viewer")
    # A finished run offers nothing to cancel.
    assert 'id="cancel"' not in page(d, f"/ui/runs/{d.run.run_id}", "admin")


def test_a_cache_hit_shows_the_curves_of_the_run_that_made_it(deployment: Deployment) -> None:
    d = deployment
    again = d.client.run(load_workflow(d.workflow))
    assert again.steps["fit"].state == "cached"
    step = page(d, f"/ui/runs/{again.run_id}/steps/fit")
    assert "A cache hit" in step and f'href="/ui/runs/{d.run.run_id}"' in step
    assert "<polyline" in step
    newest = page(d, "/ui/runs").split("<tbody>")[1].split("</tr>")[0]
    assert again.run_id in newest and newest.rstrip().endswith('<td class="num">2</td>')


def test_names_logs_and_errors_from_users_are_escaped(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    folder = tmp_path / "wf" / HOSTILE
    folder.mkdir()
    (folder / f"{HOSTILE}.txt").write_text("a\nb\n")
    wf = tmp_path / "wf" / "hostile.yaml"
    wf.write_text(
        "name: hostile\nsteps:\n"
        f"  count:\n    kind: toy_count\n    inputs: {{sources: ['./{HOSTILE}']}}\n"
        f"    config: {{note: '{HOSTILE}'}}\n"
        "  fit:\n    kind: toy_fit\n    inputs: {dataset: count.dataset}\n"
    )
    run = d.client.run(load_workflow(wf))
    assert run.state == "succeeded"
    owner = d.client.engine.create_run(load_workflow(wf), owner=HOSTILE)
    with open(d.client.settings.logs_dir(run.run_id) / "fit.log", "a") as f:
        f.write(f"{HOSTILE}\n")
    pages = [
        page(d, "/ui/runs"),
        page(d, f"/ui/runs/{owner}"),
        page(d, f"/ui/runs/{run.run_id}/steps/fit"),
        page(d, f"/ui/runs/{run.run_id}/steps/count"),
        page(d, f"/ui/artifacts/{run.steps['count'].artifacts['dataset'].digest}"),
    ]
    source = next(
        n["digest"]
        for n in d.client.lineage_graph(run.steps["count"].artifacts["dataset"].digest).nodes
        if n["type"] == "raw"
    )
    pages.append(page(d, f"/ui/artifacts/{source}"))
    for html in pages:
        assert HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0]  # the owner, shown as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[2]  # the log line
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[3]  # a config value
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[5]  # the source's name and files


def test_a_step_page_says_why_its_metrics_are_missing(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(mlflow_run_id: str) -> dict:  # type: ignore[type-arg]
        raise RuntimeError("tracking store is read-only")

    monkeypatch.setattr(deployment.client._tracker, "history", broken)
    step = page(deployment, f"/ui/runs/{deployment.run.run_id}/steps/fit")
    assert "could not be read from MLflow" in step and "tracking store is read-only" in step
    assert "<polyline" not in step
    assert 'id="attempts"' in step and 'id="log"' in step  # the rest of the page is there
