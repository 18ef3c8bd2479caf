"""Walking an artifact's ancestry from manifests alone, without Cairn's database.

Every sealed manifest names its parents by digest *and* URI, so the whole graph back to the raw
sources can be rebuilt from the artifact store: each parent's manifest is read where it lies and
its file list must have the (content) digest its child recorded; each raw source is re-digested
where it lies and must still match, and is described by the name the workflow gave it (relative
to the workflow file, or a URI), never by where it lay on the machine that ran it. The engine hands the result to stages as `ctx.ancestry(...)` (the release copies it
into its bundle as `lineage.json` + the verbatim manifests, and `cairn audit` re-checks it there,
so an auditor needs neither the store nor the database); `cairn lineage PATH` draws it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import fsspec

from cairn.artifacts.store import describe_source
from cairn.errors import CairnError
from cairn.stage.files import MANIFEST, canonical_json, manifest_digest, manifest_problem
from cairn.stage.lineage import Ancestor, Ancestry


def read_manifest(uri: str, digest: str, sealed_as: str | None = None) -> bytes:
    """The manifest bytes of the artifact at `uri`, checked against its content `digest` and,
    when its child recorded it (`sealed_as`), against the manifest digest it was sealed with."""
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        with fs.open(f"{path.rstrip('/')}/{MANIFEST}", "rb") as f:
            data: bytes = f.read()
    except FileNotFoundError:
        raise CairnError(
            f"artifact {digest[:12]} is gone from {uri} (no {MANIFEST}); "
            "fix: re-run the workflow that made it (`cairn run` recomputes missing artifacts)"
        ) from None
    problem = manifest_problem(data, digest)
    if not problem and sealed_as and manifest_digest(data) != sealed_as:
        problem = "changed since it was sealed (its provenance is not what its child recorded)"
    if problem:
        raise CairnError(
            f"artifact at {uri}: its {MANIFEST} {problem}; "
            "fix: re-run the workflow so the artifact is recomputed"
        )
    return data


def walk(
    roots: Iterable[tuple[str, str]],
    verify_sources: bool = True,
    licenses: dict[str, str] | None = None,
) -> Ancestry:
    """Every artifact reachable from `roots` ([(uri, digest)]) through parent links.

    External data ends the walk: a raw source, or a model directory given as an input (it has
    no manifest of its own). With `verify_sources` each is digested again where it lies, and one
    that changed since it was used is an error (a release would otherwise describe data it was
    not made from); without it, it is taken as recorded. Each source's manifest gets its licence:
    the one `licenses` ({digest: licence}, what the running workflow states) gives, else the one
    a child's parent entry recorded when it was made.
    """
    graph = Ancestry()
    todo: list[tuple[str, str, str, bool, str, str | None, str]] = [
        (uri, digest, "", False, "", None, "") for uri, digest in roots
    ]
    while todo:
        uri, digest, type_, external, name, sealed_as, license = todo.pop()
        license = (licenses or {}).get(digest) or license
        if digest in graph:
            known = graph.nodes[digest]
            if license and known.source and not known.manifest.get("license"):
                graph.nodes[digest] = _licensed(known, license)  # another use states it
            continue
        if not type_ and _unsealed(uri):  # a root that no step made: an external input
            type_, external = "model", True
        if type_ == "raw" or external:
            node = _source(uri, digest, type_, verify_sources, name)
            graph.nodes[digest] = _licensed(node, license) if license else node
            continue
        node = Ancestor(digest, uri, read_manifest(uri, digest, sealed_as))
        graph.nodes[digest] = node
        for p in node.parents:
            if "uri" not in p:
                raise unsealed_parents(digest, uri)
            todo.append(
                (
                    p["uri"],
                    p["digest"],
                    p["type"],
                    _external(p),
                    p.get("name") or "",
                    p.get("manifest"),
                    str(p.get("license") or ""),
                )
            )
    return graph


def _licensed(node: Ancestor, license: str) -> Ancestor:
    """A source with the licence the workflow stated for it (recorded in its child's manifest)
    in its manifest: outside its file list, so its digest is the same."""
    manifest = {**node.manifest, "license": license}
    return Ancestor(node.digest, node.uri, canonical_json(manifest), node.source)


# How a workflow names an earlier step's output (`step.output`); anything else it gives an input
# slot is external: a path or a URI (see cairn.workflow.model.is_external).
_STEP_OUTPUT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _external(parent: dict[str, str]) -> bool:
    """Whether a parent entry names data no step made: a raw source, or a directory (a model)
    given as an input. Told by how the workflow named it; a manifest sealed before names were
    recorded is told by the data itself (no manifest.json where it lies)."""
    if parent["type"] == "raw":
        return True
    name = parent.get("name")
    if name:
        return not _STEP_OUTPUT.fullmatch(name)
    return _unsealed(parent["uri"])


def _unsealed(uri: str) -> bool:
    """Data that exists where it lies but is no sealed artifact (no manifest.json)."""
    fs, path = fsspec.core.url_to_fs(uri)
    path = path.rstrip("/")
    return bool(fs.exists(path)) and not fs.exists(f"{path}/{MANIFEST}")


def _source(uri: str, digest: str, type_: str, verify: bool, name: str) -> Ancestor:
    if not verify:
        return Ancestor(digest, uri, canonical_json({"type": type_, "source": name or uri}), True)
    now, manifest = describe_source(uri, type_, name)
    if now != digest:
        raise CairnError(
            f"source {uri} changed since it was used (digest now {now[:12]}, "
            f"recorded {digest[:12]}); fix: restore it, or re-run the workflow on the "
            "new data"
        )
    return Ancestor(digest, uri, canonical_json(manifest), source=True)


def unsealed_parents(digest: str, uri: str) -> CairnError:
    """The error for an artifact whose manifest predates parent URIs: its ancestry is unknown."""
    return CairnError(
        f"artifact {digest[:12]} at {uri} was sealed before Cairn recorded parent URIs in "
        "manifests; fix: delete .cairn/store (or run with cache: false) and re-run the workflow"
    )
