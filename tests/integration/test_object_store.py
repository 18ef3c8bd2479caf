"""A run whose artifact store is an S3 server, as a team runs one: `CAIRN_STORE=s3://...`.

A real S3-compatible server (moto's, over HTTP, in its own process) holds the store. `cairn run
--audit` releases a model imported from the workflow's folder (no training: the point is where
artifacts go and how they are read back): the release must be sealed on the server, nothing of
the store may land on the local disk, and the release must audit from the server, through
`cairn run --audit` (which once mangled `s3://bucket` into the local path `s3:/bucket`) and
through `cairn audit s3://...` (which once said "no such directory"). A byte changed on the
server fails the audit naming the file; a stored key that climbs out with `..` is refused
before anything is downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import cli_env
from tests.integration.servers import s3_server
from tests.tiny import make_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.ray]
CAIRN = [sys.executable, "-m", "cairn"]

WORKFLOW = """
name: on-s3
steps:
  publish:
    kind: release
    inputs:
      model: {source: ./models/base, license: apache-2.0}
    config: {name: s3-release, include_sources: true, register_in_mlflow: false}
"""


@pytest.fixture(scope="module")
def on_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The workflow run once with its store on the S3 server: its environment, home and the
    JSON `cairn run --audit --json` printed."""
    folder = tmp_path_factory.mktemp("on-s3")
    make_tiny_model(folder / "models" / "base")
    (folder / "on-s3.yaml").write_text(WORKFLOW)
    home = folder / "home"
    with s3_server(folder) as s3:
        env = {**cli_env(home), **s3, "CAIRN_STORE": "s3://cairn/store"}
        p = subprocess.run(
            [*CAIRN, "run", str(folder / "on-s3.yaml"), "--audit", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert p.stdout.strip(), p.stderr[-3000:]
        yield {"env": env, "home": home, "run": json.loads(p.stdout), "stderr": p.stderr}


def audit(env: dict[str, str], *args: str) -> tuple[int, dict]:
    """`cairn audit ARGS --json` in this process (its S3 client reads `env`): exit code, report."""
    from typer.testing import CliRunner

    from cairn.cli import app

    out = CliRunner().invoke(app, ["audit", *args, "--json"], env=env)
    assert out.stdout.strip(), out.output[-3000:]
    assert "Traceback" not in out.output
    return out.exit_code, json.loads(out.stdout)


def problems(report: dict) -> list[str]:
    return [x for c in report["checks"] for x in c["problems"]]


def s3fs_for(env: dict[str, str]):  # type: ignore[no-untyped-def]
    import s3fs

    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
        skip_instance_cache=True,
    )


def test_the_release_is_sealed_on_the_server_and_audits_from_there(on_s3: dict) -> None:
    run = on_s3["run"]
    assert run["status"] == "succeeded", (run.get("error"), on_s3["stderr"][-3000:])
    [bundle] = run["releases"]
    assert bundle.startswith("s3://cairn/store/release/publish/"), bundle
    [report] = run["audits"]
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    assert report["path"] == bundle  # the URI, not a temporary copy
    # The release is on the server, sealed (its manifest written last); the store is not on disk.
    fs = s3fs_for(on_s3["env"])
    artifact = bundle.rsplit("/", 1)[0]
    assert fs.isfile(f"{artifact}/manifest.json") and fs.isfile(f"{bundle}/SHA256SUMS")
    assert not (on_s3["home"] / "store").exists()

    code, audited = audit(on_s3["env"], bundle)
    assert code == 0, problems(audited)
    assert audited["path"] == bundle
    assert audited["bundle_digest"] == report["bundle_digest"]
    # The store's artifact (manifest.json + the bundle inside it) audits too, seal included.
    code, audited = audit(on_s3["env"], artifact, "--no-load")
    assert code == 0, problems(audited)
    assert "seal" in [c["name"] for c in audited["checks"]]


def test_a_byte_changed_on_the_server_fails_the_audit_naming_the_file(on_s3: dict) -> None:
    fs = s3fs_for(on_s3["env"])
    [bundle] = on_s3["run"]["releases"]
    copy = "s3://cairn/tampered/bundle"
    fs.copy(bundle, copy, recursive=True)
    card = fs.cat_file(f"{copy}/README.md")
    fs.pipe_file(f"{copy}/README.md", card + b" ")
    code, report = audit(on_s3["env"], copy, "--no-load")
    assert code == 1
    found = problems(report)
    assert any(x.startswith("README.md: sha256") for x in found), found
    assert "cairn-audit-" not in json.dumps(report)  # messages never name the temporary copy


def test_hostile_or_missing_bundles_on_the_server_are_refused_plainly(on_s3: dict) -> None:
    fs = s3fs_for(on_s3["env"])
    fs.pipe_file("s3://cairn/hostile/bundle/SHA256SUMS", b"")
    fs.pipe_file("s3://cairn/hostile/bundle/../../escaped.txt", b"out")
    assert "cairn/hostile/bundle/../../escaped.txt" in fs.find("s3://cairn/hostile")  # kept as is
    code, report = audit(on_s3["env"], "s3://cairn/hostile/bundle")
    assert code == 1
    assert problems(report) == [
        "s3://cairn/hostile/bundle: the stored key ../../escaped.txt climbs out through '..', "
        "which leaves the bundle: refused before download"
    ]
    # Downloaded into the audit's temporary folder, the key would have landed two levels up.
    assert (
        not Path("/escaped.txt").exists()
        and not Path(tempfile.gettempdir(), "escaped.txt").exists()
    )

    code, report = audit(on_s3["env"], "s3://cairn/nothing-here")
    assert code == 1
    assert problems(report) == [
        "s3://cairn/nothing-here: no such bundle (nothing is stored under it)"
    ]
