"""Lineage graphs: nested trees <-> flat {nodes, edges}, their drawings, and reading them from disk.

The tree is a diamond as `cairn.lineage` returns it (`LineageNode.to_dict()`): one raw file
feeds the model twice, once through curate's `sources` and once straight into sft's `data`, so
a node is reached along two paths through two different slots. `from_path` is run on a sealed
artifact directory and on a minimal release bundle's lineage.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cairn.artifacts.graphs import flatten, from_path, nest, to_dot, to_mermaid
from cairn.artifacts.store import ArtifactStore, Sealed, describe_source
from cairn.results import LineageNode

RAW, DATASET, BASE, TUNED = (c * 64 for c in "1234")


def _node(
    digest: str, type_: str, kind: str | None, slot: str | None, *parents: LineageNode
) -> LineageNode:
    return LineageNode(
        digest=digest,
        type=type_,
        uri=f"/store/{digest[:4]}" if kind else "/data/chats.jsonl",
        step=kind,
        kind=kind,
        run_id="run-1" if kind else None,
        status="ok",
        slot=slot,
        parents=list(parents),
    )


def diamond() -> dict:
    """tuned ◀─model── base ◀─dataset── dataset ◀─sources── chats.jsonl ──data──▶ tuned"""
    raw_via_sources = _node(RAW, "raw", None, "sources")
    raw_via_data = _node(RAW, "raw", None, "data")
    dataset = _node(DATASET, "dataset", "curate", "dataset", raw_via_sources)
    base = _node(BASE, "model", "pretrain", "model", dataset)
    return _node(TUNED, "model", "sft", None, base, raw_via_data).to_dict()


# --- flatten and nest -----------------------------------------------------------------------------


def test_flatten_lists_a_node_reached_twice_once() -> None:
    nodes, edges = flatten(diamond())
    assert [n["digest"] for n in nodes] == [TUNED, BASE, DATASET, RAW]
    assert edges == [
        {"parent": BASE, "child": TUNED, "slot": "model"},
        {"parent": DATASET, "child": BASE, "slot": "dataset"},
        {"parent": RAW, "child": DATASET, "slot": "sources"},
        {"parent": RAW, "child": TUNED, "slot": "data"},
    ]


def test_flat_nodes_hold_the_artifact_not_how_it_was_reached() -> None:
    # A slot belongs to an edge: the raw file is `sources` to curate and `data` to sft.
    nodes, _ = flatten(diamond())
    for n in nodes:
        assert set(n) == {"digest", "type", "uri", "step", "kind", "run_id", "status"}


def test_nest_of_flatten_is_the_tree_again() -> None:
    tree = diamond()
    nodes, edges = flatten(tree)
    again = nest(nodes, edges, TUNED)
    assert again == tree
    assert [p["slot"] for p in again["parents"]] == ["model", "data"]
    assert LineageNode.from_dict(again) == LineageNode.from_dict(tree)


def test_nest_from_an_inner_root_and_with_unknown_parents() -> None:
    nodes, edges = flatten(diamond())
    sub = nest(nodes, edges, BASE)
    assert sub["digest"] == BASE and sub["parents"][0]["parents"][0]["digest"] == RAW
    # An edge whose parent is not among the nodes (a graph cut short) is left out.
    partial = nest([n for n in nodes if n["digest"] != RAW], edges, TUNED)
    assert [p["digest"] for p in partial["parents"]] == [BASE]
    assert partial["parents"][0]["parents"][0]["parents"] == []


def test_nest_stops_at_a_cycle() -> None:
    nodes = [{"digest": d, "type": "model"} for d in (BASE, TUNED)]
    edges = [
        {"parent": BASE, "child": TUNED, "slot": "model"},
        {"parent": TUNED, "child": BASE, "slot": "model"},
    ]
    tree = nest(nodes, edges, TUNED)
    assert tree["parents"][0]["digest"] == BASE
    assert tree["parents"][0]["parents"][0]["digest"] == TUNED
    assert tree["parents"][0]["parents"][0]["parents"] == []


# --- drawing --------------------------------------------------------------------------------------


def test_dot_has_one_line_per_node_and_edge_and_draws_sources_as_folders() -> None:
    nodes, edges = flatten(diamond())
    dot = to_dot(nodes, edges)
    lines = dot.splitlines()
    assert lines[0] == "digraph lineage {" and lines[-1] == "}" and dot.endswith("}\n")
    node_lines = [x for x in lines if "[label=" in x and "->" not in x]
    edge_lines = [x for x in lines if "->" in x]
    assert len(node_lines) == 4 and len(edge_lines) == 4
    assert len(lines) == 3 + 4 + 4 + 1  # header (3), nodes, edges, closing brace
    for n in nodes:
        [line] = [x for x in node_lines if x.startswith(f'  "{n["digest"][:12]}"')]
        assert ("shape=folder" in line) == (n["type"] == "raw")
    assert 'label="source chats.jsonl\\n' + RAW[:12] in dot
    assert 'label="pretrain (pretrain)\\nmodel ' + BASE[:12] in dot
    assert f'  "{RAW[:12]}" -> "{TUNED[:12]}" [label="data"];' in edge_lines


def test_mermaid_has_one_line_per_node_and_edge_and_draws_sources_round() -> None:
    nodes, edges = flatten(diamond())
    text = to_mermaid(nodes, edges)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR" and len(lines) == 1 + 4 + 4
    node_lines, edge_lines = lines[1:5], lines[5:]
    assert all("-->" not in x for x in node_lines) and all("-->" in x for x in edge_lines)
    [raw_line] = [x for x in node_lines if x.startswith(f"  n{RAW[:12]}")]
    assert raw_line == f'  n{RAW[:12]}[("source chats.jsonl<br/>{RAW[:12]}")]'
    assert all("[(" not in x for x in node_lines if x != raw_line)
    assert f"  n{RAW[:12]} -->|sources| n{DATASET[:12]}" in edge_lines
    assert "\\n" not in text  # dot's line break became <br/>


# --- from_path ------------------------------------------------------------------------------------


def _seal(store: ArtifactStore, kind: str, type_: str, parents: list[dict]) -> Sealed:
    staging = store.staging_dir(kind) / type_
    staging.mkdir(parents=True)
    (staging / "file.txt").write_text(kind)
    return store.seal(
        staging,
        f"{kind}/{kind}/fp/{type_}",
        {
            "type": type_,
            "kind": kind,
            "step": f"{kind}-step",
            "output": type_,
            "producer": {"run_id": f"run-{kind}", "step_run_id": 1},
            "parents": parents,
        },
    )


def test_from_path_walks_an_artifact_directory(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    source = tmp_path / "corpus.txt"
    source.write_text("words\n")
    src = describe_source(str(source), "raw")[0]
    parent = {"slot": "sources", "digest": src, "type": "raw", "uri": str(source), "name": ""}
    dataset = _seal(store, "curate", "dataset", [parent])
    model = _seal(
        store,
        "pretrain",
        "model",
        [{"slot": "dataset", "digest": dataset.digest, "type": "dataset", "uri": dataset.uri}],
    )
    nodes, edges, root = from_path(model.uri)
    assert root == model.digest
    assert nodes == [  # parents first
        {
            "digest": src,
            "type": "raw",
            "kind": None,
            "step": None,
            "uri": str(source),
            "run_id": None,
        },
        {
            "digest": dataset.digest,
            "type": "dataset",
            "kind": "curate",
            "step": "curate-step",
            "uri": dataset.uri,
            "run_id": "run-curate",
        },
        {
            "digest": model.digest,
            "type": "model",
            "kind": "pretrain",
            "step": "pretrain-step",
            "uri": model.uri,
            "run_id": "run-pretrain",
        },
    ]
    assert sorted(edges, key=lambda e: e["slot"]) == [
        {"parent": dataset.digest, "child": model.digest, "slot": "dataset"},
        {"parent": src, "child": dataset.digest, "slot": "sources"},
    ]
    # Drawn as it is read: the source is the folder.
    assert to_dot(nodes, edges).count("shape=folder") == 1


def test_from_path_reads_a_release_bundles_lineage_json(tmp_path: Path) -> None:
    nodes, edges = flatten(diamond())
    bundle = tmp_path / "demo-release"
    bundle.mkdir()
    (bundle / "lineage.json").write_text(
        json.dumps(
            {
                "format": 1,
                "release": {"name": "demo", "model": TUNED, "evals": []},
                "nodes": nodes,
                "edges": edges,
            }
        )
    )
    # No manifest.json and no store: the bundle's own record is the graph.
    assert from_path(str(bundle)) == (nodes, edges, TUNED)


def test_from_path_on_a_directory_that_is_neither_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        from_path(str(tmp_path))
