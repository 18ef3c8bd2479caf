"""`ancestry.walk`: an artifact's ancestry rebuilt from sealed manifests alone.

A small chain is sealed with the real `ArtifactStore`, each manifest naming its parents the way
the engine's `attempt.py` writes them ({slot, digest, type, uri, name}):

    corpus/ (raw) ──sources──▶ dataset ──dataset──▶ base ──model──▶ tuned
    chats.jsonl (raw) ─────────────────────────────────────data───▶ tuned
    hub/model/ (a model no step made) ──model──▶ external_tuned ◀──data── chats.jsonl

and the walk must find every node, order parents first, re-digest raw sources (or not), and
refuse a deleted artifact, a tampered manifest, a changed source and a changed file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from cairn.artifacts import ancestry
from cairn.artifacts.ancestry import walk
from cairn.artifacts.store import ArtifactStore, Sealed, describe_source
from cairn.errors import CairnError
from cairn.stage import Ancestry
from cairn.stage.files import MANIFEST, canonical_json


def _parent(
    slot: str, digest: str, type_: str, uri: str, name: str = "", sealed: Sealed | None = None
) -> dict[str, str]:
    # The shape execute_step (cairn/engine/attempt.py) records for each input; `name` is the
    # reference as the workflow wrote it: `step.output` for a step's output, else the path; a
    # sealed parent's manifest digest is recorded too.
    entry = {"slot": slot, "digest": digest, "type": type_, "uri": uri, "name": name or uri}
    return entry | ({"manifest": sealed.manifest_digest} if sealed else {})


def _seal(
    store: ArtifactStore, kind: str, type_: str, files: dict[str, str], parents: list[dict]
) -> Sealed:
    staging = store.staging_dir(f"run-{kind}") / type_
    for rel, text in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_text(text)
    fingerprint = kind[0] * 64
    return store.seal(
        staging,
        f"{kind}/{kind}/{fingerprint}/{type_}",
        {
            "type": type_,
            "kind": kind,
            "step": kind,
            "output": type_,
            "fingerprint": fingerprint,
            "producer": {"run_id": "run-1", "step_run_id": 1},
            "parents": parents,
            "metadata": {},
        },
    )


@pytest.fixture
def chain(tmp_path: Path) -> dict[str, Any]:
    """The chain in the module docstring: {name: (digest, uri)} plus the paths to tamper with."""
    store = ArtifactStore(tmp_path / "store")
    corpus = tmp_path / "data" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "a.txt").write_text("To be, or not to be.\n")
    (corpus / "b.txt").write_text("That is the question.\n")
    chats = tmp_path / "data" / "chats.jsonl"
    chats.write_text('{"messages": []}\n')
    hub = tmp_path / "hub" / "model"
    hub.mkdir(parents=True)
    (hub / "config.json").write_text('{"hidden_size": 64}\n')
    corpus_d = describe_source(str(corpus), "raw")[0]
    chats_d = describe_source(str(chats), "raw")[0]
    hub_d = describe_source(str(hub), "model")[0]  # as the engine digests an external input

    dataset = _seal(
        store,
        "curate",
        "dataset",
        {"dataset.json": '{"documents": 2}\n', "shards/0.bin": "tokens"},
        [_parent("sources", corpus_d, "raw", str(corpus))],
    )
    base = _seal(
        store,
        "pretrain",
        "model",
        {"config.json": "{}\n"},
        [_parent("dataset", dataset.digest, "dataset", dataset.uri, "curate.dataset", dataset)],
    )
    tuned = _seal(
        store,
        "sft",
        "model",
        {"config.json": '{"tuned": true}\n'},
        [
            _parent("model", base.digest, "model", base.uri, "pretrain.model", base),
            _parent("data", chats_d, "raw", str(chats)),
        ],
    )
    external_tuned = _seal(
        store,
        "dpo",
        "model",
        {"config.json": '{"external": true}\n'},
        [
            _parent("model", hub_d, "model", str(hub)),
            _parent("data", chats_d, "raw", str(chats)),
        ],
    )
    return {
        "store": store,
        "corpus": (corpus_d, str(corpus)),
        "chats": (chats_d, str(chats)),
        "hub": (hub_d, str(hub)),
        "dataset": (dataset.digest, dataset.uri),
        "base": (base.digest, base.uri),
        "tuned": (tuned.digest, tuned.uri),
        "external_tuned": (external_tuned.digest, external_tuned.uri),
    }


def _walk(chain: dict, *names: str, verify_sources: bool = True) -> Ancestry:
    return walk([(chain[n][1], chain[n][0]) for n in names], verify_sources=verify_sources)


def _digests(chain: dict, *names: str) -> set[str]:
    return {chain[n][0] for n in names}


# --- the graph ------------------------------------------------------------------------------------


def test_every_ancestor_is_found_and_only_ancestors(chain: dict) -> None:
    graph = _walk(chain, "tuned")
    assert set(graph.nodes) == _digests(chain, "tuned", "base", "dataset", "corpus", "chats")
    assert len(graph) == 5
    assert chain["external_tuned"][0] not in graph and chain["hub"][0] not in graph
    assert {graph[d].uri for d in graph.nodes} == {
        chain[n][1] for n in ("tuned", "base", "dataset", "corpus", "chats")
    }
    assert [graph[chain[n][0]].type for n in ("tuned", "base", "dataset", "corpus")] == [
        "model",
        "model",
        "dataset",
        "raw",
    ]
    assert graph[chain["base"][0]].step == "pretrain"


def test_sources_are_flagged_and_artifacts_are_not(chain: dict) -> None:
    graph = _walk(chain, "tuned")
    assert {d for d, n in graph.nodes.items() if n.source} == _digests(chain, "corpus", "chats")


def test_several_roots_share_their_common_ancestors(chain: dict) -> None:
    graph = _walk(chain, "tuned", "external_tuned")
    assert len(graph) == 7  # chats.jsonl, a parent of both, appears once
    assert set(graph.nodes) == {d for d, _ in (chain[n] for n in chain if n != "store")}


def test_topological_order_puts_every_parent_before_its_children(chain: dict) -> None:
    graph = _walk(chain, "tuned", "external_tuned")
    order = [n.digest for n in graph.topological()]
    assert sorted(order) == sorted(graph.nodes)
    position = {d: i for i, d in enumerate(order)}
    edges = graph.edges()
    assert len(edges) == 6
    for e in edges:
        assert position[e["parent"]] < position[e["child"]], e
    # Stable: the same graph walked from the roots in another order gives the same list.
    again = _walk(chain, "external_tuned", "tuned")
    assert [n.digest for n in again.topological()] == order
    assert [n.type for n in graph.of_type("model")] == ["model"] * 4


def test_edges_name_each_parent_child_and_slot(chain: dict) -> None:
    d = {n: chain[n][0] for n in chain if n != "store"}
    expected = [
        {"parent": d["corpus"], "child": d["dataset"], "slot": "sources"},
        {"parent": d["dataset"], "child": d["base"], "slot": "dataset"},
        {"parent": d["chats"], "child": d["tuned"], "slot": "data"},
        {"parent": d["base"], "child": d["tuned"], "slot": "model"},
    ]
    edges = _walk(chain, "tuned").edges()
    assert edges == sorted(expected, key=lambda e: (e["child"], e["slot"], e["parent"]))


# --- raw sources and external models ---------------------------------------------------------


def test_sources_are_re_digested_when_verified(chain: dict) -> None:
    corpus_d, corpus = chain["corpus"]
    node = _walk(chain, "tuned")[corpus_d]
    # The manifest is the one computed now from the files where they lie.
    assert node.manifest == describe_source(corpus, "raw")[1]
    assert [f["path"] for f in node.files] == ["a.txt", "b.txt"]


def test_a_changed_source_is_an_error_naming_it_and_the_fix(chain: dict) -> None:
    corpus_d, corpus = chain["corpus"]
    Path(corpus, "b.txt").write_text("That was the question.\n")
    with pytest.raises(CairnError) as err:
        _walk(chain, "tuned")
    message = str(err.value)
    assert corpus in message and "changed since it was used" in message
    assert f"recorded {corpus_d[:12]}" in message and "fix: restore it" in message


def test_without_verification_sources_are_taken_as_recorded(
    chain: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path(chain["corpus"][1], "b.txt").write_text("That was the question.\n")  # changed...

    def rehash(uri: str, type_: str) -> None:
        raise AssertionError(f"re-digested {uri}")

    monkeypatch.setattr(ancestry, "describe_source", rehash)
    graph = _walk(chain, "tuned", verify_sources=False)  # ...and not looked at
    corpus_d, corpus = chain["corpus"]
    node = graph[corpus_d]
    assert node.source and node.type == "raw"
    assert node.manifest == {"type": "raw", "source": corpus}  # no files: nothing was hashed
    assert len(graph) == 5


def test_a_model_directory_no_step_made_is_a_source_node(chain: dict) -> None:
    hub_d, hub = chain["hub"]
    graph = _walk(chain, "external_tuned")
    node = graph[hub_d]
    assert node.source and node.type == "model" and node.uri == hub
    assert node.manifest["files"][0]["path"] == "config.json"
    assert not graph[chain["external_tuned"][0]].source
    # Given as a root (an input no step made), it is a source node too, and checked.
    alone = walk([(hub, hub_d)])
    assert list(alone.nodes) == [hub_d] and alone[hub_d].source and alone[hub_d].type == "model"
    Path(hub, "config.json").write_text('{"hidden_size": 128}\n')
    with pytest.raises(CairnError, match=f"source {hub} changed"):
        walk([(hub, hub_d)])


# --- what the walk refuses --------------------------------------------------------------------


def test_a_deleted_artifact_is_gone(chain: dict) -> None:
    base_d, base = chain["base"]
    shutil.rmtree(base)
    with pytest.raises(CairnError) as err:
        _walk(chain, "tuned")
    message = str(err.value)
    assert f"artifact {base_d[:12]} is gone from {base}" in message
    assert "fix: re-run the workflow" in message


@pytest.mark.parametrize("verify", [True, False])
def test_an_artifact_without_its_manifest_is_gone_not_an_external_model(
    chain: dict, verify: bool
) -> None:
    # Its files are still there, like a model directory given as an input; but the workflow
    # named it `pretrain.model`, a step's output, so it is a sealed artifact that lost its seal.
    base_d, base = chain["base"]
    Path(base, MANIFEST).unlink()
    with pytest.raises(CairnError, match=f"artifact {base_d[:12]} is gone from"):
        _walk(chain, "tuned", verify_sources=verify)


def test_a_tampered_manifest_fails_its_digest(chain: dict) -> None:
    dataset_d, dataset = chain["dataset"]
    manifest = json.loads(Path(dataset, MANIFEST).read_bytes())
    manifest["files"][0]["sha256"] = "0" * 64  # still valid JSON, still well formed
    Path(dataset, MANIFEST).write_bytes(canonical_json(manifest))
    with pytest.raises(CairnError) as err:
        _walk(chain, "tuned")
    message = str(err.value)
    assert (
        f"artifact at {dataset}: its {MANIFEST} does not match digest {dataset_d[:12]}" in message
    )


def test_tampered_provenance_fails_against_what_the_child_recorded(chain: dict) -> None:
    # The content digest does not cover provenance; the child's record of the manifest does.
    _, dataset = chain["dataset"]
    manifest = json.loads(Path(dataset, MANIFEST).read_bytes())
    manifest["config"] = {"min_words": 0}  # the files are untouched: the content is the same
    Path(dataset, MANIFEST).write_bytes(canonical_json(manifest))
    with pytest.raises(CairnError) as err:
        _walk(chain, "tuned")
    assert f"artifact at {dataset}: its {MANIFEST} changed since it was sealed" in str(err.value)


def test_a_manifest_without_parent_uris_is_refused(chain: dict) -> None:
    old = _seal(
        chain["store"],
        "legacy",
        "model",
        {"config.json": "{}\n"},
        [{"slot": "model", "digest": chain["base"][0], "type": "model"}],  # no "uri"
    )
    with pytest.raises(CairnError, match="sealed before Cairn recorded parent URIs"):
        walk([(old.uri, old.digest)])


def test_ancestor_read_checks_the_bytes_against_the_manifest(chain: dict) -> None:
    dataset_d, dataset = chain["dataset"]
    node = _walk(chain, "tuned")[dataset_d]
    assert node.read("dataset.json") == b'{"documents": 2}\n'
    assert node.read("shards/0.bin") == b"tokens"
    assert node.read("no-such-file.txt") is None
    assert node.entry("dataset.json") == {
        "path": "dataset.json",
        "size": 17,
        "sha256": node.files[0]["sha256"],
    }
    Path(dataset, "dataset.json").write_text('{"documents": 9}\n')  # same size, other bytes
    with pytest.raises(CairnError) as err:
        node.read("dataset.json")
    message = str(err.value)
    assert f"{dataset}/dataset.json does not match its manifest" in message
    assert "re-run the step 'curate'" in message
    assert node.read("shards/0.bin") == b"tokens"  # the other file is still fine
