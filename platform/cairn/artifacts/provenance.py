"""The audit's check of a release's SLSA provenance (`provenance.intoto.json`).

The statement is a claim about the bundle, so each part is held against the bundle itself: every
subject is a file of the bundle with that sha256 and every file is a subject (but SHA256SUMS, the
statement and the signature, which cannot list themselves); the resolved dependencies and
byproducts are exactly what `lineage.json` and its manifests say (computed by the same code that
wrote them, `cairn.stage.provenance`); the workflow's recorded sha256 is that of
`config/workflow.yaml`. A release made before statements has none, and is not checked for one
(removing it from a bundle that had one fails SHA256SUMS and the signature).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cairn.artifacts.confined import Folder, Opt, Refused, parse_json, path_problem, shown
from cairn.results import Check
from cairn.stage import provenance
from cairn.stage.provenance import STATEMENT

_DIGEST = {"sha256": str}
_SHAPE = {
    "_type": str,
    "predicateType": str,
    "subject": [{"name": str, "digest": _DIGEST}],
    "predicate": {
        "buildDefinition": {
            "buildType": str,
            "externalParameters": {"workflow": Opt({"digest": _DIGEST, "content": str})},
            "resolvedDependencies": [{"uri": str, "digest": _DIGEST}],
        },
        "runDetails": {
            "builder": {"id": str},
            "metadata": Opt({"invocationId": Opt(str)}),
            "byproducts": Opt([{"uri": str, "digest": _DIGEST}]),
        },
    },
}


def check(
    bundle: Folder,
    lineage: dict[str, Any] | None,
    manifests: dict[str, dict[str, Any]],
    unsubjected: set[str],
) -> Check | None:
    """The `provenance` check, or None when the bundle has no statement. `unsubjected` are the
    files that cannot be subjects (SHA256SUMS, the signature)."""
    if STATEMENT not in bundle.files and STATEMENT not in bundle.odd:
        return None
    check = Check("provenance")
    try:
        statement = parse_json(STATEMENT, bundle.read(STATEMENT), _SHAPE)
    except Refused as e:
        check.problems.append(str(e))
        return check
    for field, value, expected in (
        ("_type", statement["_type"], provenance.STATEMENT_TYPE),
        ("predicateType", statement["predicateType"], provenance.PREDICATE_TYPE),
        (
            "predicate.buildDefinition.buildType",
            statement["predicate"]["buildDefinition"]["buildType"],
            provenance.BUILD_TYPE,
        ),
    ):
        if value != expected:
            check.problems.append(f"{STATEMENT}: {field} is {value!r}, not {expected!r}")
    subjects = _subjects(bundle, statement["subject"], check)
    for rel in sorted(bundle.files.keys() - subjects - unsubjected - {STATEMENT}):
        check.problems.append(f"{shown(rel)}: not a subject of {STATEMENT}")
    build = statement["predicate"]["buildDefinition"]
    run = statement["predicate"]["runDetails"]
    if lineage is not None:
        _same(
            check,
            "resolvedDependencies",
            build["resolvedDependencies"],
            provenance.dependencies(lineage, manifests),
        )
        _same(
            check,
            "runDetails.byproducts",
            run.get("byproducts") or [],
            provenance.byproducts(lineage, manifests),
        )
    _workflow(bundle, build["externalParameters"].get("workflow"), check)
    invocation = (run.get("metadata") or {}).get("invocationId")
    check.detail = (
        f"{len(subjects)} subjects, {len(build['resolvedDependencies'])} resolved dependencies; "
        f"built by {run['builder']['id']} in run {invocation}"
    )
    return check


def _subjects(bundle: Folder, subjects: list[dict[str, Any]], check: Check) -> set[str]:
    """Each subject against the file it names; returns the names."""
    names: set[str] = set()
    for i, s in enumerate(subjects):
        rel, digest = s["name"], s["digest"]["sha256"]
        if problem := path_problem(rel):
            check.problems.append(f"{STATEMENT}: subject[{i}] {shown(rel)} {problem}; not read")
            continue
        if rel in names:
            check.problems.append(f"{STATEMENT}: subject {shown(rel)} is listed twice")
            continue
        names.add(rel)
        if rel in bundle.odd:
            continue  # a link or special file: the checksums check names it
        if problem := bundle.not_a_file(rel, f"{STATEMENT}: subject[{i}]"):
            check.problems.append(f"{problem} (a subject of {STATEMENT})")
            continue
        try:
            actual = bundle.sha256(rel)
        except Refused as e:
            check.problems.append(str(e))
            continue
        if actual != digest.lower():
            check.problems.append(f"{rel}: differs from its subject in {STATEMENT}")
    return names


def _key(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True)


def _same(check: Check, field: str, stated: list[Any], expected: list[dict[str, Any]]) -> None:
    """A list in the statement against what lineage.json says it must be, naming each entry
    that is missing or extra."""
    have = {_key(e): e for e in stated}
    want = {_key(e): e for e in expected}
    for k in sorted(want.keys() - have.keys()):
        e = want[k]
        check.problems.append(
            f"{STATEMENT}: {field} lacks {e['uri']} ({e['digest']['sha256'][:12]}), which "
            "lineage.json records"
        )
    for k in sorted(have.keys() - want.keys()):
        e = have[k]
        digest = str((e.get("digest") or {}).get("sha256"))[:12]
        check.problems.append(
            f"{STATEMENT}: {field} names {e.get('uri')} ({digest}) as lineage.json does not"
        )


def _workflow(bundle: Folder, workflow: dict[str, Any] | None, check: Check) -> None:
    """The workflow the statement records is the one the bundle keeps."""
    copy = provenance.WORKFLOW_COPY
    if workflow is None:
        if copy in bundle.files:
            check.problems.append(f"{STATEMENT}: records no workflow, but the bundle has {copy}")
        return
    recorded = workflow["digest"]["sha256"]
    if hashlib.sha256(workflow["content"].encode("utf-8")).hexdigest() != recorded:
        check.problems.append(f"{STATEMENT}: the workflow's content does not have its sha256")
    if copy not in bundle.files:
        check.problems.append(f"{copy}: missing (the workflow {STATEMENT} records)")
        return
    try:
        if bundle.sha256(copy) != recorded:
            check.problems.append(f"{copy}: differs from the workflow {STATEMENT} records")
    except Refused as e:
        check.problems.append(str(e))
