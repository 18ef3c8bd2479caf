"""`cairn reproduce RELEASE`: re-run a release's recorded workflow and check it made the same bytes.

A release's model card promises that running its workflow with the same package versions
recomputes the same artifacts; this checks the promise, from the bundle alone:
1. the bundle is audited: its lineage must hold together; any other failure (a changed file) is
   reported with the reproduction, which shows what it changes;
2. the packages that change results (each fingerprint records their versions) must be installed
   at the recorded versions (`ignore_versions` goes on anyway and reports the differences);
3. in a fresh Cairn home (never the user's: nothing is read from a cache), the recorded workflow
   file is written to `HOME/workflow/` and each raw source placed where the workflow names it:
   the bundle's copy (a release made with `include_sources: true`), or the same relative path
   under `sources` (a folder holding the original workflow's data, e.g. a checkout's
   `workflows/`); a URI or an absolute path is read where it lies. Every source must have its
   recorded digest (`allow_changed_sources` runs anyway, to see what a change does downstream);
4. the steps that made the release's lineage are run (not `serve`, not the release itself);
5. every data, tokenizer, model, checkpoint and eval artifact of the lineage is compared by
   content digest with the recorded one, in topological order, naming the files that differ.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.errors import CairnError
from cairn.results import Reproduced, ReproduceReport
from cairn.settings import Settings

if TYPE_CHECKING:
    from cairn.artifacts.store import ArtifactStore
    from cairn.engine.progress import Display
    from cairn.workflow import Workflow


def reproduce(
    bundle: str | Path,
    *,
    home: str | Path | None = None,
    sources: str | Path | None = None,
    ignore_versions: bool = False,
    allow_changed_sources: bool = False,
    display: Display | None = None,
) -> ReproduceReport:
    """Re-run the release at `bundle` in a fresh Cairn home and compare what it makes with what
    the release records (see the module docstring). Raises CairnError for a bundle that cannot
    be reproduced as it stands (fails its audit, other package versions, a source not at hand)."""
    from cairn.client import audit
    from cairn.stage import package_version

    root = Path(bundle)
    checks = audit(root, load_model=False).checks
    if any(c.name == "lineage" and not c.ok for c in checks):
        raise CairnError(
            f"{bundle}: its lineage does not hold together, so there is nothing trustworthy to "
            f"reproduce; fix: `cairn audit {bundle}` names the files"
        )
    # Any other failure (a changed file) is reported, and the reproduction shows its effect.
    audited = [f"{c.name}: {p}" for c in checks if not c.ok for p in c.problems]
    lineage = _read_json(root, "lineage.json")
    environment = _read_json(root, "config/environment.json")
    recorded = dict(environment.get("result_packages") or {})
    versions = {
        p: (v, now) for p, v in sorted(recorded.items()) if (now := package_version(p)) != v
    }
    if versions and not ignore_versions:
        listed = ", ".join(f"{p} {r} (installed: {i})" for p, (r, i) in versions.items())
        raise CairnError(
            f"{bundle} was made with other versions of packages that change results: {listed}; "
            "fix: install those versions (pip install 'PKG==VERSION'), or pass "
            "--ignore-versions to reproduce anyway and see what differs"
        )

    temporary = home is None
    home = _fresh_home(home)
    work = home / "workflow"
    work.mkdir(parents=True)
    nodes = lineage["nodes"]
    found = [_place(root, n, work, Path(sources) if sources else None) for n in nodes if _raw(n)]
    stopped = None
    if not allow_changed_sources and (changed := [a.name for a in found if not a.same]):
        stopped = (
            f"raw source {changed[0]} is not the one the release was made from (it names the "
            "files that differ); restore it, or pass --allow-changed-sources to see what it "
            "changes downstream"
        )
        if temporary:  # it holds nothing but copies of the bundle's sources
            shutil.rmtree(home, ignore_errors=True)
        return ReproduceReport(str(root), str(home), None, found, versions, stopped, audited)

    wf = _workflow(root, environment, work, {n["step"] for n in nodes if not _raw(n)})
    from cairn.client import Client

    client = Client(Settings.embedded(home))
    result = client.run(wf, display=display)
    if not result.ok:
        errors = {n: s.error for n, s in result.steps.items() if s.state == "failed"}
        raise CairnError(
            f"the reproduction's run {result.run_id} failed: {errors}; its logs: "
            f"CAIRN_HOME={home} cairn logs {result.run_id}"
        )
    made = [_compare(root, n, result.steps, client.engine.store) for n in nodes if not _raw(n)]
    done = ReproduceReport(
        str(root), str(home), result.run_id, found + made, versions, stopped, audited
    )
    if done.ok and temporary:  # nothing to look at: every artifact is the recorded one
        shutil.rmtree(home, ignore_errors=True)
        done.home = f"{home} (removed: bit-identical)"
    return done


def _raw(node: dict[str, Any]) -> bool:
    """A root of the lineage: a raw source, or a model imported from outside (no step made it)."""
    return node["type"] == "raw" or not node.get("step")


def _read_json(root: Path, rel: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((root / rel).read_text())
    except (OSError, ValueError) as e:
        raise CairnError(
            f"{root / rel}: unreadable ({e}); fix: reproduce a release bundle made by "
            "`cairn run` (it has lineage.json and config/)"
        ) from e
    return data


def _fresh_home(home: str | Path | None) -> Path:
    if home is None:
        return Path(tempfile.mkdtemp(prefix="cairn-reproduce-"))
    path = Path(home).expanduser().resolve()
    if path.exists() and any(path.iterdir()):
        raise CairnError(
            f"{path} is not empty: a reproduction needs a fresh Cairn home (nothing may come "
            "from an earlier cache); fix: name a new folder, or leave --home out (a temporary one)"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _place(root: Path, node: dict[str, Any], work: Path, sources: Path | None) -> Reproduced:
    """Put one raw source where the workflow in `work` reads it, and check its digest."""
    from cairn.artifacts.store import describe_source
    from cairn.stages.release.sources import carried

    name = str(node["uri"])
    rel = carried(name)
    copies = node.get("copies") or {}
    if rel is None:  # a URI or an absolute path: read where it lies
        where, origin = name, "its URI"
    elif copies:
        for bundle_rel in copies.values():
            dest = work / str(bundle_rel).removeprefix("sources/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / bundle_rel, dest)
        where, origin = str(work / rel.removeprefix("sources/")), "bundle"
    elif sources is not None:
        src = sources / rel.removeprefix("sources/")
        if not src.exists():
            raise CairnError(
                f"raw source {name}: not in --sources {sources} ({src} does not exist); fix: "
                "give the folder that held the release's workflow file"
            )
        dest = work / rel.removeprefix("sources/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dest)
        where, origin = str(dest), "--sources"
    else:
        raise CairnError(
            f"raw source {name}: the release does not carry it (made without include_sources) "
            "and the workflow names it relative to its file; fix: pass --sources DIR, the folder "
            "that held the workflow file (e.g. your checkout's workflows/), or release with "
            "`include_sources: true`"
        )
    digest, manifest = describe_source(where, node["type"], name)
    differs = [] if digest == node["digest"] else _differs(root, node, manifest["files"])
    return Reproduced(name, node["type"], node["digest"], digest, differs, origin)


def _workflow(root: Path, environment: dict[str, Any], work: Path, steps: set[str]) -> Workflow:
    """The recorded workflow, written into `work` (its sources beside it), keeping the steps
    the lineage needs and what they read from."""
    from cairn.workflow import load_workflow

    recorded = (environment.get("workflow") or {}).get("file") or "workflow.yaml"
    path = work / Path(str(recorded)).name
    path.write_bytes((root / "config" / "workflow.yaml").read_bytes())
    wf = load_workflow(path)
    keep: set[str] = set()
    todo = [s for s in steps if s in wf.steps]
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo += wf.steps[name].upstream()
    return dataclasses.replace(wf, steps={n: s for n, s in wf.steps.items() if n in keep})


def _compare(
    root: Path, node: dict[str, Any], steps: dict[str, Any], store: ArtifactStore
) -> Reproduced:
    name = f"{node['step']}.{node.get('output') or node['type']}"
    step = steps.get(node["step"])
    art = step.artifacts.get(node.get("output") or "") if step else None
    if art is None:
        return Reproduced(name, node["type"], node["digest"], None, ["(not made)"])
    if art.digest == node["digest"]:
        return Reproduced(name, node["type"], node["digest"], art.digest)
    manifest = json.loads(store.read_manifest(art.uri))
    return Reproduced(
        name, node["type"], node["digest"], art.digest, _differs(root, node, manifest["files"])
    )


def _differs(root: Path, node: dict[str, Any], files: list[dict[str, Any]]) -> list[str]:
    """The files whose bytes differ between the recorded manifest of `node` and `files`."""
    recorded = json.loads((root / node["manifest"]).read_bytes())["files"]
    before = {f["path"]: f["sha256"] for f in recorded}
    now = {f["path"]: f["sha256"] for f in files}
    out = []
    for path in sorted(before.keys() | now.keys()):
        if path not in now:
            out.append(f"{path} (missing)")
        elif path not in before:
            out.append(f"{path} (extra)")
        elif before[path] != now[path]:
            out.append(f"{path} (changed)")
    return out


__all__ = ["reproduce"]
