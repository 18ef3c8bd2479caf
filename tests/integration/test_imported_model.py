"""Fine-tuning a base model imported from outside Cairn, through a workflow, to an audited release.

A team's usual case: a Hugging Face model directory that Cairn did not make (here a small Llama
built in a second, in the test's own folder, outside Cairn's home), named as an sft step's
`model` with the licence it comes under. The whole chain runs for real (Ray Train, TRL, SQLite,
MLflow, the release) in a few training steps: the base must be a root of the lineage in Cairn's
database, with its licence; its licence must reach MLflow, the model card and lineage.json; the
release carries a copy of it that `cairn audit` checks, and a tampered copy fails the audit
with a message that names it (the unit tests in tests/unit/stages/test_release_imported.py change the base itself).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests import REPO
from tests.integration.conftest import cli_env, settings_for
from tests.tiny import make_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.ray]

# A LoRA fine-tune: the release records base + adapter + merge.
WORKFLOW = """
name: imported
steps:
  chat:
    kind: sft
    inputs:
      model: {source: ./models/base, license: apache-2.0}
      data: ./chat/sft.jsonl
    config: {max_steps: 2, warmup_steps: 0, global_batch_size: 4, max_length: 64, log_every: 1,
             lora: {r: 4, alpha: 8}}
    resources: {num_workers: 1, cpus_per_worker: 1}
  publish:
    kind: release
    inputs: {model: chat.model}
    config: {name: imported-release, include_sources: true, register_in_mlflow: false}
"""


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, ray_local) -> dict:  # type: ignore[no-untyped-def]
    from cairn.engine import Engine
    from cairn.workflow import load_workflow

    folder = tmp_path_factory.mktemp("imported")
    base = make_tiny_model(folder / "models" / "base")
    shutil.copytree(REPO / "workflows" / "data" / "chat", folder / "chat")
    path = folder / "imported.yaml"
    path.write_text(WORKFLOW)
    home = folder / "home"
    result = Engine(settings_for(home)).run(load_workflow(path))
    assert result.state == "succeeded", {n: s.error for n, s in result.steps.items()}
    return {"folder": folder, "base": base, "home": home, "result": result}


def _base_digest(imported: dict) -> str:
    from cairn.artifacts.store import describe_source

    digest, _ = describe_source(str(imported["base"]), "model")
    return digest


def test_the_base_model_is_a_root_of_the_lineage_with_its_licence(imported: dict) -> None:
    from sqlalchemy import select

    from cairn.cli import app
    from cairn.client import Client
    from cairn.db.models import ArtifactRow, Event

    client = Client(settings_for(imported["home"]))
    tuned = imported["result"].steps["chat"].artifacts["model"]
    tree = client.lineage(tuned.digest)
    roots = {p.slot: p for p in tree.parents}
    base = roots["model"]
    assert base.digest == _base_digest(imported)  # digested file by file, where it lies
    assert (base.type, base.step, base.parents) == ("model", None, [])  # no step made it
    assert base.license == "apache-2.0"
    with client.engine.sessions() as s:
        row = s.get_one(ArtifactRow, base.digest)
        assert row.step_run_id is None and row.manifest["license"] == "apache-2.0"
        assert row.file_count == len(list(imported["base"].iterdir()))
        said = [e.data for e in s.scalars(select(Event).where(Event.type == "source"))]
        assert {"digest": base.digest, "license": "apache-2.0"}.items() <= next(
            d for d in said if d["digest"] == base.digest
        ).items()
        sealed = s.get_one(ArtifactRow, tuned.digest).manifest
    parent = next(p for p in sealed["parents"] if p["slot"] == "model")
    assert (parent["name"], parent["license"]) == ("./models/base", "apache-2.0")
    # A statement about the base, not the base: sft's fingerprint does not hold it, the
    # release's (which states it) does.
    assert "source_licenses" not in sealed["fingerprint_inputs"]
    release = imported["result"].steps["publish"].artifacts["release"]
    with client.engine.sessions() as s:
        published = s.get_one(ArtifactRow, release.digest).manifest["fingerprint_inputs"]
    assert published["source_licenses"] == {base.digest: "apache-2.0"}

    env = cli_env(imported["home"])
    out = CliRunner().invoke(app, ["lineage", tuned.digest[:16]], env=env)
    assert out.exit_code == 0, out.output
    assert f"model {base.digest[:16]} ← source" in out.output
    out = CliRunner().invoke(app, ["lineage", tuned.digest[:16], "--json"], env=env)
    shown = next(p for p in json.loads(out.output)["parents"] if p["slot"] == "model")
    assert (shown["digest"], shown["step"], shown["license"]) == (base.digest, None, "apache-2.0")


def test_the_licence_reaches_mlflow(imported: dict) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(settings_for(imported["home"]).mlflow_uri)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`cairn.run_id` = '{imported['result'].run_id}' and tags.`cairn.step` = 'chat'",
    )
    assert run.data.tags["cairn.input.model.license"] == "apache-2.0"
    assert "licence apache-2.0" in run.data.tags["mlflow.note.content"]


def test_the_release_names_the_base_and_its_licence_and_audits(imported: dict) -> None:
    from cairn import audit

    bundle = Path(imported["result"].releases[0])
    digest = _base_digest(imported)
    card = (bundle / "README.md").read_text()
    assert f"Fine-tuned from `./models/base` (`{digest}`), licence apache-2.0" in card
    assert "| `./models/base` | apache-2.0 |" in (bundle / "DATA_CARD.md").read_text()
    lineage = json.loads((bundle / "lineage.json").read_text())
    node = next(n for n in lineage["nodes"] if n["digest"] == digest)
    assert (node["type"], node["step"], node["license"]) == ("model", None, "apache-2.0")
    assert node["copies"]["model.safetensors"] == "sources/models/base/model.safetensors"
    # LoRA on the imported base: the release says which base the adapter was merged into, and the
    # adapter it carries loads with peft onto that base.
    (merge,) = lineage["lora_merges"]
    assert (merge["base"], merge["merge"]) == (digest, "peft merge_and_unload")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(imported["base"])
    tuned = PeftModel.from_pretrained(base, bundle / merge["bundle_path"])
    assert any("lora_A" in name for name, _ in tuned.named_parameters())

    report = audit(bundle, load_model=False)
    assert report.ok, [c for c in report.checks if not c.ok]


def test_a_tampered_copy_of_the_base_model_fails_the_audit(imported: dict, tmp_path: Path) -> None:
    from cairn import audit

    copy = tmp_path / "bundle"
    shutil.copytree(Path(imported["result"].releases[0]), copy)
    with (copy / "sources/models/base/config.json").open("a") as f:
        f.write(" ")
    report = audit(copy, load_model=False)
    problems = [p for c in report.checks for p in c.problems]
    assert not report.ok
    assert any(
        p.startswith("sources/models/base/config.json: differs from config.json in the manifest")
        for p in problems
    ), problems
