"""The artifact store: sealing is atomic and content-described, verification catches any change.

Runs on a local directory and on fsspec's in-memory filesystem (the code path of `s3://` stores).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from cairn.artifacts.store import ArtifactStore, describe_source
from cairn.errors import CairnError
from cairn.stage.files import MANIFEST, canonical_json, manifest_problem


def fill(d: Path) -> Path:
    (d / "sub").mkdir(parents=True, exist_ok=True)
    (d / "a.txt").write_text("alpha")
    (d / "sub" / "b.bin").write_bytes(bytes(range(50)))
    return d


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        return ArtifactStore(tmp_path / "store")
    return ArtifactStore(f"memory://cairn-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")


def seal(store: ArtifactStore, rel: str = "k/s/fp/out"):
    staging = fill(store.staging_dir("run-step") / "out")
    return store.seal(staging, rel, {"type": "dataset", "parents": []})


def test_seal_lists_every_file_and_digest_is_the_content(store):
    art = seal(store)
    data = store.read_manifest(art.uri)
    assert art.manifest_digest == hashlib.sha256(data).hexdigest()
    listing = [
        {"path": "a.txt", "sha256": hashlib.sha256(b"alpha").hexdigest()},
        {"path": "sub/b.bin", "sha256": hashlib.sha256(bytes(range(50))).hexdigest()},
    ]
    assert art.digest == hashlib.sha256(canonical_json(listing)).hexdigest()
    manifest = json.loads(data)
    assert [f["path"] for f in manifest["files"]] == ["a.txt", "sub/b.bin"]
    assert manifest["files"][0] == {
        "path": "a.txt",
        "size": 5,
        "sha256": hashlib.sha256(b"alpha").hexdigest(),
    }
    assert store.verify(art.uri, art.digest) == []
    local = store.local_path(art.uri, art.digest)
    assert (local / "sub" / "b.bin").read_bytes() == bytes(range(50))


def test_the_same_bytes_are_the_same_artifact_whoever_made_them(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    first = store.seal(
        fill(store.staging_dir("a") / "out"), "k/s/fp1/out", {"type": "dataset", "run": "r-1"}
    )
    again = store.seal(
        fill(store.staging_dir("b") / "out"), "k/s/fp2/out", {"type": "dataset", "run": "r-2"}
    )
    assert first.digest == again.digest  # the content
    assert first.manifest_digest != again.manifest_digest  # the provenance
    other = fill(store.staging_dir("c") / "out")
    (other / "a.txt").write_text("alphA")
    assert store.seal(other, "k/s/fp3/out", {"type": "dataset"}).digest != first.digest
    renamed = fill(store.staging_dir("d") / "out")
    (renamed / "a.txt").rename(renamed / "A.txt")  # a file's name is content too
    assert store.seal(renamed, "k/s/fp4/out", {"type": "dataset"}).digest != first.digest


def test_a_source_digest_does_not_depend_on_where_it_lies(tmp_path):
    here, there = fill(tmp_path / "clone-1" / "data"), fill(tmp_path / "elsewhere" / "x" / "data")
    digest, manifest = describe_source(str(here), "raw", "./data")
    assert describe_source(str(there), "raw")[0] == digest
    assert manifest["source"] == "./data"  # as the workflow wrote it, not the absolute path
    (there / "a.txt").write_text("changed")
    assert describe_source(str(there), "raw")[0] != digest


def test_a_format_1_manifest_is_still_checked_by_its_own_rule(tmp_path):
    # Stores sealed before content digests addressed an artifact by its manifest's sha256.
    legacy = canonical_json({"cairn_manifest": 1, "type": "dataset", "files": []})
    assert manifest_problem(legacy, hashlib.sha256(legacy).hexdigest()) is None
    assert "does not match" in str(manifest_problem(legacy, "0" * 64))


def test_local_seal_moves_the_staging_directory_into_place(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    staging = fill(store.staging_dir("run-step") / "out")
    art = store.seal(staging, "k/s/fp/out", {"type": "dataset"})
    assert Path(art.uri, MANIFEST).exists() and Path(art.uri, "sub", "b.bin").exists()
    assert not staging.exists()  # renamed, not copied: never visible half-written


def test_an_empty_output_is_refused(store):
    empty = store.staging_dir("x") / "out"
    empty.mkdir()
    with pytest.raises(CairnError, match="wrote no files"):
        store.seal(empty, "k/s/fp/out", {"type": "dataset"})


@pytest.mark.parametrize(
    "tamper, problem",
    [
        (lambda p: p.joinpath("a.txt").write_text("alphA"), "a.txt: sha256 mismatch"),
        (lambda p: p.joinpath("a.txt").write_text("alpha!"), "a.txt: size 6 != 5"),
        (lambda p: p.joinpath("sub", "b.bin").unlink(), "sub/b.bin: missing"),
        (lambda p: p.joinpath("extra.txt").write_text("x"), "extra.txt: not in manifest"),
        (lambda p: p.joinpath(MANIFEST).write_text("{}"), "manifest.json: is not a manifest"),
    ],
)
def test_verify_names_what_changed(tmp_path, tamper, problem):
    store = ArtifactStore(tmp_path / "store")
    art = seal(store)
    tamper(Path(art.uri))
    assert any(problem in p for p in store.verify(art.uri, art.digest)), store.verify(
        art.uri, art.digest
    )


def test_remote_verify_catches_a_flipped_byte(tmp_path):
    store = ArtifactStore(f"memory://cairn-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")
    art = seal(store)
    with store.fs.open(f"{art.uri}/a.txt", "wb") as f:
        f.write(b"alphb")
    assert store.verify(art.uri, art.digest) == ["a.txt: sha256 mismatch"]


def test_resealing_a_taken_path_quarantines_the_old_artifact(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    first = seal(store)
    Path(first.uri, "a.txt").write_text("corrupted")
    second = seal(store)
    assert second.uri == first.uri and store.verify(second.uri, second.digest) == []
    kept = list((tmp_path / "store" / ".quarantine").iterdir())
    assert len(kept) == 1 and (kept[0] / "a.txt").read_text() == "corrupted"


def test_sources_are_digested_in_place_and_deterministically(tmp_path):
    src = fill(tmp_path / "src")
    d1, m1 = describe_source(str(src), "raw")
    d2, _ = describe_source(str(src), "raw")
    assert d1 == d2 and m1["source"] == str(src) and len(m1["files"]) == 2
    (src / "a.txt").write_text("beta")
    assert describe_source(str(src), "raw")[0] != d1
    with pytest.raises(CairnError, match="holds no files; fix: point the input"):
        (tmp_path / "empty").mkdir()
        describe_source(str(tmp_path / "empty"), "raw")


def test_inputs_are_read_from_their_own_filesystem_not_the_stores(tmp_path):
    # a local source feeding a remote store is read where it lies
    remote = ArtifactStore(f"memory://cairn-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")
    src = fill(tmp_path / "src")
    assert remote.local_path(str(src), "d1") == src
    # a remote source (another filesystem) feeding a local store is downloaded, once, by digest
    local = ArtifactStore(tmp_path / "store", cache_dir=tmp_path / "cache2")
    fs = remote.fs
    uri = f"memory://src-{uuid.uuid4().hex}"
    fs.pipe(f"{uri}/a.txt", b"alpha")
    got = local.local_path(uri, "d2")
    assert (got / "a.txt").read_bytes() == b"alpha"
    fs.rm(uri, recursive=True)
    assert local.local_path(uri, "d2") == got  # cached: not fetched again


def test_a_store_whose_filesystem_is_not_installed_is_refused_before_anything_is_made(tmp_path):
    """`CAIRN_STORE=gs://…` without gcsfs: `cairn run` says what to install, with no traceback,
    and creates no Cairn home (the store is opened before the database)."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed: gs:// needs nothing more here")
    with pytest.raises(CairnError, match=r"CAIRN_STORE gs://bucket/cairn needs a package"):
        ArtifactStore("gs://bucket/cairn")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text('{"text": "one two three"}\n')
    (tmp_path / "wf.yaml").write_text(
        "name: x\nsteps:\n  c:\n    kind: curate\n    inputs: {sources: [./d]}\n"
    )
    env = {**os.environ, "CAIRN_HOME": str(tmp_path / "home"), "CAIRN_STORE": "gs://bucket/cairn"}
    env.pop("CAIRN_DATABASE_URL", None)
    p = subprocess.run(
        [sys.executable, "-m", "cairn", "run", "wf.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode != 0 and "Traceback" not in p.stderr + p.stdout, p.stderr[-2000:]
    assert "needs a package that is not installed" in p.stderr and "fix: install" in p.stderr
    assert not (tmp_path / "home").exists()


def test_a_remote_stores_downloads_go_to_an_absolute_folder(tmp_path, monkeypatch):
    """Training workers run in other working directories: a relative cache folder was theirs
    to miss (FileNotFoundError: '.cache/artifacts/…')."""
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore(f"memory://cairn-{uuid.uuid4().hex[:8]}")
    assert store.cache_dir.is_absolute()
    named = ArtifactStore(f"memory://cairn-{uuid.uuid4().hex[:8]}", cache_dir=Path("rel"))
    assert named.cache_dir == tmp_path / "rel"
