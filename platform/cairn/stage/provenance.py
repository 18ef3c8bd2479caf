"""The SLSA provenance a release carries: one in-toto Statement, made by the release stage, re-derived
by `cairn audit`.

`provenance.intoto.json` in every bundle is an in-toto Statement v1 whose predicate is SLSA
Provenance v1, so tools that read SLSA (policy engines, `slsa-verifier`-style checks, a registry's
attestation store) can consume a Cairn release without knowing Cairn:

- subjects: every file of the bundle with its sha256, except `SHA256SUMS` (which lists the
  statement) and the statement itself;
- buildDefinition.externalParameters: the workflow file as written, its path in its repository and
  its sha256 (the same bytes as the bundle's `config/workflow.yaml`), and the release step's name;
- buildDefinition.resolvedDependencies: what came from outside — every raw source and every model
  directory given as an input (the roots of the lineage graph), named as the workflow named them,
  with their Cairn content digest as `sha256` (the sha256 over their files' sorted names and
  sha256s, `cairn.stage.files.content_digest`; their manifest in `lineage/manifests/` lists the
  files) and the licence the workflow stated for them, where it stated one;
- runDetails: Cairn as the builder, the run id as the invocation, and every artifact the run made on
  the way (datasets, models, eval reports) as a byproduct, by store address and content digest.

The dependencies and byproducts are computed here from `lineage.json`'s nodes and their manifests,
by the release stage when it writes the statement and by the audit when it checks one, so the two
cannot disagree about what the statement should say. The statement is unsigned as the stage writes
it; `cairn release sign` signs it with every other file (OpenSSF model signing, `release.sig`).

A leaf beside `cairn.stage.files`: the release stage and the audit both import it.
"""

from __future__ import annotations

import hashlib
from typing import Any

STATEMENT = "provenance.intoto.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# What a Cairn release build is, and who builds it (URIs that name, not locations to fetch).
BUILD_TYPE = "https://github.com/cairn-llm/cairn/blob/main/docs/slsa.md#release-v1"
BUILDER_ID = "https://github.com/cairn-llm/cairn/blob/main/docs/slsa.md#builder-v1"
WORKFLOW_COPY = "config/workflow.yaml"


def _roots(
    lineage: dict[str, Any], manifests: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """lineage.json's nodes split into the graph's roots (external inputs) and the rest."""
    roots: list[dict[str, Any]] = []
    made: list[dict[str, Any]] = []
    for node in lineage.get("nodes") or []:
        manifest = manifests.get(node["digest"]) or {}
        (made if manifest.get("parents") else roots).append(node)
    return roots, made


def dependencies(
    lineage: dict[str, Any], manifests: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """resolvedDependencies: each raw source and imported model, as the workflow named it."""
    roots, _ = _roots(lineage, manifests)
    return [
        {
            "uri": node.get("uri") or node["digest"],
            "digest": {"sha256": node["digest"]},
            "annotations": {
                "type": node.get("type"),
                "manifest": node.get("manifest"),
                # The licence the workflow stated for it (lineage.json has it since sources
                # carried one): a policy engine reading SLSA can check it without Cairn.
                **({"license": node["license"]} if node.get("license") else {}),
            },
        }
        for node in sorted(roots, key=lambda n: (str(n.get("uri")), n["digest"]))
    ]


def byproducts(
    lineage: dict[str, Any], manifests: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """runDetails.byproducts: each artifact a step made on the way to the release."""
    _, made = _roots(lineage, manifests)
    return [
        {
            "name": f"{node.get('step')}.{node.get('output')}",
            "uri": node.get("uri") or node["digest"],
            "digest": {"sha256": node["digest"]},
            "annotations": {
                "type": node.get("type"),
                "kind": node.get("kind"),
                "runId": node.get("run_id"),
                "manifest": node.get("manifest"),
            },
        }
        for node in made
    ]


def workflow_parameter(text: str | None, path: str | None) -> dict[str, Any] | None:
    """externalParameters.workflow: the file as written, where it lies in its repository, and its
    sha256 (of the same bytes the bundle keeps as `config/workflow.yaml`)."""
    if not text:
        return None
    return {
        "path": path,
        "bundlePath": WORKFLOW_COPY,
        "digest": {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()},
        "content": text,
    }


def statement(
    *,
    subjects: dict[str, str],
    lineage: dict[str, Any],
    manifests: dict[str, dict[str, Any]],
    workflow: dict[str, Any],
    run_id: str,
    step: str,
    cairn_version: str | None,
) -> dict[str, Any]:
    """The Statement for a bundle whose files are `subjects` ({path: sha256})."""
    git = str(workflow.get("git") or "")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": rel, "digest": {"sha256": sha}} for rel, sha in sorted(subjects.items())
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "workflow": workflow_parameter(workflow.get("text"), workflow.get("file")),
                    "step": step,
                },
                "internalParameters": {
                    "workflowName": workflow.get("name"),
                    "gitCommit": git.removesuffix("-dirty") or None,
                    "gitDirty": git.endswith("-dirty"),
                },
                "resolvedDependencies": dependencies(lineage, manifests),
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"cairn": cairn_version or "unknown"}},
                "metadata": {"invocationId": run_id},
                "byproducts": byproducts(lineage, manifests),
            },
        },
    }


__all__ = [
    "BUILDER_ID",
    "BUILD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT",
    "STATEMENT_TYPE",
    "byproducts",
    "dependencies",
    "statement",
    "workflow_parameter",
]
