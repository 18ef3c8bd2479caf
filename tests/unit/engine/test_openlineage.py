"""OpenLineage events from the engine, on the shipped fakes: what each step run sends, through
openlineage-python's own file transport configured the usual way (OPENLINEAGE__TRANSPORT__*),
every event valid against the spec's schemas; and nothing at all when nothing is configured."""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest

import tests.unit.engine.toy_stages  # noqa: F401  (registers toy_count and toy_fit)
from cairn.engine import openlineage
from cairn.engine.openlineage import Lineage, configured, dataset_name
from cairn.workflow import load_workflow
from tests.openlineage import Endpoint, validate
from tests.unit.engine.test_engine import make_engine, write_wf


@pytest.fixture
def no_config(monkeypatch, tmp_path):
    """No OpenLineage configuration anywhere the client looks."""
    for k in list(os.environ):
        if k.startswith("OPENLINEAGE"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def events_file(no_config, monkeypatch, tmp_path):
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "lab")
    return path


def read(path):
    events = [json.loads(line) for line in path.read_text().splitlines()]
    for e in events:
        validate(e)
    return events


def of(events, job, type_=None):
    return [
        e for e in events if e["job"]["name"] == job and (type_ is None or e["eventType"] == type_)
    ]


def test_nothing_configured_sends_nothing(no_config, home, tmp_path):
    assert not configured()
    engine = make_engine(home)
    result = engine.run(load_workflow(write_wf(home)))
    assert result.state == "succeeded"
    assert not list(tmp_path.rglob("*.jsonl")) and not (tmp_path / "openlineage.yml").exists()


def test_configuration_is_found_where_the_client_looks(no_config, monkeypatch, tmp_path):
    (tmp_path / "openlineage.yml").write_text("transport:\n  type: console\n")
    assert configured()
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not configured()
    monkeypatch.delenv("OPENLINEAGE_DISABLED")
    (tmp_path / "openlineage.yml").unlink()
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    assert configured()


def test_every_step_run_starts_and_completes_with_its_datasets(events_file, home):
    engine = make_engine(home)
    result = engine.run(load_workflow(write_wf(home)))
    assert result.state == "succeeded"
    events = read(events_file)
    assert [(e["job"]["name"], e["eventType"]) for e in events] == [
        ("toy", "START"),
        ("toy.count", "START"),
        ("toy.count", "COMPLETE"),
        ("toy.fit", "START"),
        ("toy.fit", "COMPLETE"),
        ("toy", "COMPLETE"),
    ]
    assert {e["job"]["namespace"] for e in events} == {"lab"}
    parent = events[0]["run"]["runId"]
    assert events[-1]["run"]["runId"] == parent
    for e in events[1:-1]:  # each step run names the workflow's run as its parent
        assert e["run"]["facets"]["parent"]["run"]["runId"] == parent
        assert e["run"]["facets"]["parent"]["job"] == {"namespace": "lab", "name": "toy"}
        assert e["run"]["facets"]["cairn"]["runId"] == result.run_id
    # START and COMPLETE of one step run share its run id; two step runs do not
    count_start, count_done = of(events, "toy.count")
    assert count_start["run"]["runId"] == count_done["run"]["runId"] != parent
    # the raw source is count's input, where it lies, with Cairn's digest as its version
    src = count_start["inputs"][0]
    assert src["namespace"] == f"file://{socket.gethostname()}"
    assert src["name"] == str((home / "wf" / "data").resolve())
    assert src["facets"]["datasetType"]["subType"] == "RAW"
    assert count_start["outputs"] == []
    dataset = result.steps["count"].artifacts["dataset"]
    out = count_done["outputs"][0]
    assert (out["namespace"], out["name"]) == (src["namespace"], dataset.uri)
    assert out["facets"]["version"]["datasetVersion"] == dataset.digest
    # fit reads that same dataset and writes a MODEL
    fit_done = of(events, "toy.fit", "COMPLETE")[0]
    assert [(i["name"], i["facets"]["version"]["datasetVersion"]) for i in fit_done["inputs"]] == [
        (dataset.uri, dataset.digest)
    ]
    model = fit_done["outputs"][0]
    assert model["facets"]["datasetType"]["datasetType"] == "MODEL"
    assert (
        model["facets"]["version"]["datasetVersion"]
        == result.steps["fit"].artifacts["model"].digest
    )
    config = fit_done["run"]["facets"]["cairn_config"]
    assert config["kind"] == "toy_fit" and config["config"]["width"] == 4
    assert config["_schemaURL"].endswith("#/$defs/CairnConfigRunFacet") and config["_producer"]


def test_a_cache_hit_names_the_run_that_computed_it(events_file, home):
    engine = make_engine(home)
    wf = load_workflow(write_wf(home))
    engine.run(wf)
    first = read(events_file)
    events_file.unlink()
    again = engine.run(wf)
    assert {r.state for r in again.steps.values()} == {"cached"}
    events = read(events_file)
    assert [e["eventType"] for e in of(events, "toy.fit")] == ["START", "COMPLETE"]
    done = of(events, "toy.fit", "COMPLETE")[0]
    computed = of(first, "toy.fit", "COMPLETE")[0]
    by = done["run"]["facets"]["cairn_cache"]["computedBy"]
    assert by == [
        {
            "output": "model",
            "cairnRunId": computed["run"]["facets"]["cairn"]["runId"],
            "step": "fit",
            "runId": computed["run"]["runId"],
            "job": {"namespace": "lab", "name": "toy.fit"},
        }
    ]
    assert done["run"]["runId"] != computed["run"]["runId"]
    assert done["outputs"] == computed["outputs"]  # the same artifact, the same dataset


def test_failed_attempts_fail_and_retries_start_again(events_file, home):
    fit = f"{{fail_times: 1, counter: '{home / 'counter'}'}}"
    engine = make_engine(home)
    result = engine.run(load_workflow(write_wf(home, fit=fit, retries=1)))
    assert result.state == "succeeded"
    fits = of(read(events_file), "toy.fit")
    assert [(e["eventType"], e["run"]["facets"]["cairn"]["attempt"]) for e in fits] == [
        ("START", 1),
        ("FAIL", 1),
        ("START", 2),
        ("COMPLETE", 2),
    ]
    error = fits[1]["run"]["facets"]["errorMessage"]
    assert "planned failure 1" in error["message"] and error["programmingLanguage"] == "python"
    assert fits[0]["run"]["runId"] == fits[1]["run"]["runId"] != fits[2]["run"]["runId"]


def test_a_failed_run_fails_and_skipped_steps_abort(events_file, home):
    engine = make_engine(home)
    # count's source holds no files: count fails before it starts, fit never runs
    (home / "wf" / "empty").mkdir()
    wf_path = write_wf(home)
    wf_path.write_text(wf_path.read_text().replace("./data", "./empty"))
    result = engine.run(load_workflow(wf_path))
    assert result.state == "failed"
    events = read(events_file)
    assert [e["eventType"] for e in of(events, "toy.count")] == ["START", "FAIL"]
    assert [e["eventType"] for e in of(events, "toy.fit")] == ["START", "ABORT"]
    assert of(events, "toy")[-1]["eventType"] == "FAIL"
    assert (
        "holds no files" in of(events, "toy", "FAIL")[0]["run"]["facets"]["errorMessage"]["message"]
    )


def test_http_carries_the_api_key_in_its_header_never_in_an_event(no_config, monkeypatch, home):
    with Endpoint() as endpoint:
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", endpoint.url)
        monkeypatch.setenv(
            "OPENLINEAGE__TRANSPORT__AUTH", '{"type": "api_key", "apiKey": "k-s3cr3t-42"}'
        )
        result = make_engine(home).run(load_workflow(write_wf(home)))
    assert result.state == "succeeded"
    assert len(endpoint.received) == 6
    for r in endpoint.received:
        validate(r.event)
        assert r.headers["Authorization"] == "Bearer k-s3cr3t-42"
        assert "k-s3cr3t-42" not in json.dumps(r.event)


def test_an_unreachable_endpoint_never_fails_the_run(no_config, monkeypatch, home, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Not OPENLINEAGE_URL: the client copies that into os.environ, past monkeypatch's undoing.
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__RETRY", '{"total": 0}')
    monkeypatch.setattr(openlineage, "CLOSE_WAIT_S", 10.0)
    engine = make_engine(home)
    with caplog.at_level(logging.WARNING, logger="cairn.engine.openlineage"):
        result = engine.run(load_workflow(write_wf(home)))
    assert result.state == "succeeded"
    warnings = [r.getMessage() for r in caplog.records if r.name == "cairn.engine.openlineage"]
    assert len(warnings) == 1, warnings
    assert result.run_id in warnings[0] and "ConnectionError" in warnings[0]


def test_an_unusable_configuration_never_fails_the_run(no_config, monkeypatch, home, caplog):
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "no_such_transport")
    engine = make_engine(home)
    with caplog.at_level(logging.WARNING, logger="cairn.engine.openlineage"):
        result = engine.run(load_workflow(write_wf(home)))
    assert result.state == "succeeded"
    [warning] = [r.getMessage() for r in caplog.records if r.name == "cairn.engine.openlineage"]
    assert "no_such_transport" in warning and result.run_id in warning


def test_a_bug_building_events_never_fails_the_run(events_file, monkeypatch, home, caplog):
    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(Lineage, "_step", bug)
    engine = make_engine(home)
    with caplog.at_level(logging.WARNING, logger="cairn.engine.openlineage"):
        result = engine.run(load_workflow(write_wf(home)))
    assert result.state == "succeeded"
    warnings = [r for r in caplog.records if r.name == "cairn.engine.openlineage"]
    assert len(warnings) == 1 and "OPENLINEAGE_DISABLED" in warnings[0].getMessage()
    assert "KeyError" in caplog.text  # its traceback is logged, not swallowed
    # the workflow's START, sent before the bug, is all there is
    assert [e["eventType"] for e in read(events_file)] == ["START"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/cairn/model/x", ("s3://bucket", "cairn/model/x")),
        ("gcs://bucket/a/b", ("gs://bucket", "a/b")),
        ("simplecache::s3://bucket/raw.jsonl", ("s3://bucket", "raw.jsonl")),
        ("hdfs://nn:8020/data/x", ("hdfs://nn:8020", "/data/x")),
        ("file://host1/srv/data", ("file://host1", "/srv/data")),
        # secrets in a source's URL never reach an event
        (
            "https://user:pw@example.org:8443/d.jsonl?token=abc",
            ("https://example.org:8443", "/d.jsonl"),
        ),
    ],
)
def test_dataset_names_follow_the_naming_spec(uri, expected):
    assert dataset_name(uri) == expected


def test_a_local_path_is_named_on_this_host(tmp_path):
    assert dataset_name(str(tmp_path / "x")) == (
        f"file://{socket.gethostname()}",
        str(tmp_path / "x"),
    )


def test_eval_scores_are_a_facet_of_the_report(no_config, home):
    from types import SimpleNamespace

    lineage = Lineage(SimpleNamespace(name="w"), "r-1", None, client=object())
    meta = {"metrics": {"acc": 0.5, "ppl": float("nan")}, "model_digest": "abc"}
    ds = lineage._dataset("/s/evaluate/e/fp/report", "d1", "eval_report", meta, output=True)
    scores = ds.facets["cairn_evalScores"]
    assert scores["metrics"] == {"acc": 0.5} and scores["modelDigest"] == "abc"
    assert ds.facets["datasetType"].subType == "EVAL_REPORT"
