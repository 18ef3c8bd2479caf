"""The Grafana dashboards in dashboards/ draw metrics that exist: cairn.json only what /metrics
exports (and all of it), ray.json only names Ray's own dashboards use. Renaming a metric on
either side breaks these tests, not a panel on someone's wall."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import REPO
from tests.unit.server.conftest import Deployment

DASHBOARDS = REPO / "dashboards"
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
# PromQL's words that are not metrics: aggregation modifiers, set operators, `offset`.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
KEYWORDS |= {"unless", "offset"}


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: its panels' targets and its query variables."""
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found.append(var["query"]["query"])
    return found


def names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: every identifier left once strings, label
    matchers, ranges, grouping label lists and function calls are set aside."""
    e = QUOTED.sub('""', expr)
    # Grafana's label_values(METRIC, LABEL): the label is not a metric.
    e = re.sub(r"label_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)", r"(\1)", e)
    e = re.sub(r"\{[^}]*\}", "{}", e)
    e = re.sub(r"\[[^\]]*\]", "[]", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        if m.group() not in KEYWORDS and not e[m.end() :].lstrip().startswith("("):
            names.add(m.group())
    return names


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["cairn.json", "ray.json"])
def test_dashboards_import_on_any_grafana(name: str) -> None:
    dashboard = load(name)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(
        p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for p in panels
    )
    assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels for t in p["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_cairn_json_draws_exactly_what_metrics_exports(deployment: Deployment) -> None:
    r = deployment.http.get("/metrics", headers=deployment.as_("viewer"))
    families = list(text_string_to_metric_families(r.text))
    exported = {s.name for f in families for s in f.samples}  # with _bucket, _sum, _total, ...
    assert {"cairn_step_duration_seconds_bucket", "cairn_cache_hits_total"} <= exported

    drawn: set[str] = set()
    for expr in queries(load("cairn.json")):
        names = names_in(expr)
        assert names, f"no metric found in {expr!r}"
        assert names <= exported, f"{expr!r} names {sorted(names - exported)}, not in /metrics"
        drawn |= names
    # And every family is on the dashboard somewhere.
    undrawn = [f.name for f in families if not any(s.name in drawn for s in f.samples)]
    assert not undrawn, f"/metrics exports {undrawn}, which dashboards/cairn.json never shows"


def test_ray_json_names_only_metrics_ray_exports() -> None:
    ray_panels = Path(pytest.importorskip("ray").__file__).parent / "dashboard/modules/metrics"
    known = "\n".join(p.read_text() for p in (ray_panels / "dashboards").glob("*_panels.py"))
    assert "ray_tasks" in known  # Ray's own dashboard factories, where its metric names are
    for expr in queries(load("ray.json")):
        names = names_in(expr)
        assert names, f"no metric found in {expr!r}"
        unknown = {n for n in names if not re.search(rf"\b{n}\b", known)}
        assert not unknown, f"{expr!r} names {sorted(unknown)}, which Ray's dashboards never use"


def test_the_name_parser_finds_metrics_and_only_metrics() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, kind) (increase(cairn_x_bucket{state="a{b[",'
        'kind=~"$kind"}[1d]))) / clamp_min(sum(cairn_y_total[5m]), 1e3) + on() cairn_w '
        "* 100 or vector(0)"
    )
    assert names_in(expr) == {"cairn_x_bucket", "cairn_y_total", "cairn_w"}
    assert names_in('label_values(cairn_z{a=~"$a"}, kind)') == {"cairn_z"}
