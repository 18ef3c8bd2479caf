"""Step fingerprints on the real stage specs: what enters the cache key and what stays out.

Identity (every config field not declared `Runtime[...]`, input digests and their slots, the
kind's code version, result-changing package versions) must change the fingerprint; runtime
fields, resources, the launcher, the step's name and paths must not. `StageSpec.code_version`
is checked on a throwaway kind written to tmp_path as a package, with shared code beside it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn import stages
from cairn.engine import fingerprint as fp_module
from cairn.engine.fingerprint import fingerprint, fingerprint_payload
from cairn.stage import Resources, StageConfig, StageSpec
from cairn.stages.pretrain import PretrainConfig
from cairn.stages.sft import SftConfig

PLATFORM = str(Path(cairn.__file__).parents[1])  # the same code in a subprocess
PRETRAIN = stages.get("pretrain")
SFT = stages.get("sft")
DIGEST_A, DIGEST_B = "a" * 64, "b" * 64

# A valid value other than the default for every identity field. The tests below check that
# these tables name exactly the identity fields, so a new config field has to be added here
# (and so be seen to enter the fingerprint) or be declared Runtime[...].
# PretrainConfig's validator ties hidden_size, num_heads and num_kv_heads together (the head
# size must be one vLLM supports) and warmup_steps to max_steps: each value below keeps the
# defaults of the other fields valid, so each field changes alone.
PRETRAIN_CHANGED: dict[str, Any] = {
    "hidden_size": 256,  # head_dim 128 with the default 2 heads
    "num_layers": 3,
    "num_heads": 4,  # head_dim 32
    "num_kv_heads": 1,
    "intermediate_size": 256,
    "rope_theta": 500000.0,
    "init_std": 0.01,
    "max_steps": 300,
    "global_batch_size": 32,
    "lr": 1e-3,
    "min_lr_ratio": 0.0,
    "warmup_steps": 10,
    "weight_decay": 0.0,
    "betas": (0.9, 0.99),
    "grad_clip": 0.5,
    "seed": 1,
    "dtype": "bfloat16",
    "sharding": "ddp",
    "checkpoint_every": 50,
    "eval_every": 25,
    "eval_batches": 8,
}
SFT_CHANGED: dict[str, Any] = {
    "max_steps": 50,
    "epochs": 2.0,
    "global_batch_size": 32,
    "lr": 1e-3,
    "lr_scheduler": "linear",
    "warmup_steps": 2,
    "weight_decay": 0.1,
    "grad_clip": 0.5,
    "max_length": 256,
    "seed": 1,
    "checkpoint_every": 10,
    "packing": True,
    "lora": {"r": 8},
}
# Runtime fields with a non-default value each.
RUNTIME_CHANGED: dict[str, Any] = {
    "log_every": 7,
    "max_failures": 5,
    "keep_checkpoints": 3,
    "micro_batch_size": 4,
}
CASES = {"pretrain": (PRETRAIN, PretrainConfig), "sft": (SFT, SftConfig)}


def inputs_of(spec: StageSpec) -> dict[str, list[str]]:
    return {slot: [DIGEST_A] for slot in spec.inputs}


def fp(spec: StageSpec, config: StageConfig, inputs: dict[str, list[str]] | None = None) -> str:
    return fingerprint(spec, config, inputs_of(spec) if inputs is None else inputs)


# --- the config: identity vs runtime ------------------------------------------------------------


def test_runtime_fields_are_the_declared_ones() -> None:
    assert set(PretrainConfig.runtime_fields()) == {
        "log_every",
        "max_failures",
        "keep_checkpoints",
        "micro_batch_size",
    }
    # sft redeclares log_every and max_failures with its own defaults: still Runtime.
    assert set(SftConfig.runtime_fields()) == {"log_every", "max_failures", "keep_checkpoints"}


@pytest.mark.parametrize(
    "model, changed", [(PretrainConfig, PRETRAIN_CHANGED), (SftConfig, SFT_CHANGED)]
)
def test_the_tables_cover_every_identity_field(model: type[StageConfig], changed: dict) -> None:
    identity = set(model.model_fields) - set(model.runtime_fields())
    assert set(changed) == identity
    assert set(model().identity()) == identity


@pytest.mark.parametrize("kind", ["pretrain", "sft"])
def test_identity_leaves_out_runtime_fields_even_when_set(kind: str) -> None:
    _, model = CASES[kind]
    runtime = {k: v for k, v in RUNTIME_CHANGED.items() if k in model.runtime_fields()}
    config = model(**runtime)
    assert config.identity() == model().identity()
    assert not set(runtime) & set(config.identity())
    # ...while model_dump still has them: the step gets them, the fingerprint does not.
    assert {k: config.model_dump()[k] for k in runtime} == runtime


def test_identity_is_json_data_with_defaults_resolved() -> None:
    ident = PretrainConfig().identity()
    assert ident["betas"] == [0.9, 0.95]  # a tuple dumped as JSON data
    # The validator fills these in, so writing the resolved value is the same identity.
    assert ident["num_kv_heads"] == 2 and ident["intermediate_size"] == 512
    assert PretrainConfig(num_kv_heads=2, intermediate_size=512).identity() == ident


# --- the fingerprint ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, field",
    [("pretrain", f) for f in RUNTIME_CHANGED]
    + [("sft", f) for f in ("log_every", "max_failures", "keep_checkpoints")],
)
def test_a_runtime_field_set_off_default_keeps_the_fingerprint(kind: str, field: str) -> None:
    spec, model = CASES[kind]
    default = model()
    changed = model(**{field: RUNTIME_CHANGED[field]})
    assert getattr(changed, field) != getattr(default, field)
    assert fp(spec, changed) == fp(spec, default)


@pytest.mark.parametrize(
    "kind, field",
    [("pretrain", f) for f in PRETRAIN_CHANGED] + [("sft", f) for f in SFT_CHANGED],
)
def test_every_identity_field_changes_the_fingerprint(kind: str, field: str) -> None:
    spec, model = CASES[kind]
    table = PRETRAIN_CHANGED if kind == "pretrain" else SFT_CHANGED
    default = model()
    changed = model(**{field: table[field]})
    assert changed.identity()[field] != default.identity()[field]
    assert fp(spec, changed) != fp(spec, default)


def test_input_digests_and_their_slots_change_the_fingerprint() -> None:
    config = SftConfig()
    base = fp(SFT, config, {"model": [DIGEST_A], "data": [DIGEST_B]})
    assert fp(SFT, config, {"model": [DIGEST_B], "data": [DIGEST_B]}) != base
    # The same digests under other slot names: a different step.
    assert fp(SFT, config, {"model": [DIGEST_B], "data": [DIGEST_A]}) != base
    assert fp(SFT, config, {"base": [DIGEST_A], "data": [DIGEST_B]}) != base
    # Slots are sorted: the order the dict was built in does not matter.
    assert fp(SFT, config, {"data": [DIGEST_B], "model": [DIGEST_A]}) == base


def test_order_within_a_slot_matters() -> None:
    # The code keeps a many-slot's digests in the order the workflow lists them (curate mixes
    # its sources in that order), so listing the same inputs in another order is another step.
    config = SftConfig()
    ab = fp(SFT, config, {"model": [DIGEST_A], "data": [DIGEST_A, DIGEST_B]})
    ba = fp(SFT, config, {"model": [DIGEST_A], "data": [DIGEST_B, DIGEST_A]})
    assert ab != ba
    assert fp(SFT, config, {"model": [DIGEST_A], "data": [DIGEST_A]}) != ab


def test_code_version_and_kind_change_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    config = PretrainConfig()
    base = fp(PRETRAIN, config)
    assert fingerprint_payload(PRETRAIN, config, inputs_of(PRETRAIN))["code"] == (
        PRETRAIN.code_version()
    )
    monkeypatch.setattr(StageSpec, "code_version", lambda self: "0" * 64)
    assert fp(PRETRAIN, config) != base
    monkeypatch.undo()
    assert fp(PRETRAIN, config) == base
    assert fp(dataclasses.replace(PRETRAIN, kind="pretrain2"), config) != base


def test_result_package_versions_change_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SftConfig()
    base = fp(SFT, config)
    assert set(fingerprint_payload(SFT, config, inputs_of(SFT))["packages"]) == {
        "torch",
        "transformers",
        "trl",
        "peft",
    }
    real = fp_module.package_version
    monkeypatch.setattr(fp_module, "package_version", lambda p: "9.9.9" if p == "trl" else real(p))
    assert fp(SFT, config) != base
    monkeypatch.undo()
    more = dataclasses.replace(SFT, result_packages=(*SFT.result_packages, "numpy"))
    assert fp(more, config) != base


def test_resources_launcher_step_name_and_paths_stay_out() -> None:
    # fingerprint() does not even take a step name, resources or paths...
    assert list(inspect.signature(fingerprint).parameters) == [
        "spec",
        "config",
        "inputs",
        "licenses",
    ]
    config = PretrainConfig()
    payload = fingerprint_payload(PRETRAIN, config, inputs_of(PRETRAIN))
    assert set(payload) == {"kind", "code", "config", "inputs", "packages"}
    # ...and what the spec says about placement does not enter through it either.
    moved = dataclasses.replace(
        PRETRAIN,
        default_resources=Resources(num_workers=8, cpus_per_worker=4, gpus_per_worker=1),
        launcher="task",
        elastic=False,
        doc="another description",
    )
    assert fp(moved, config) == fp(PRETRAIN, config)


def test_stated_licences_change_the_fingerprint_and_none_leaves_it_as_it_was() -> None:
    # A release states its sources' licences in its cards: a new statement is a new release.
    config = SftConfig()
    base = fp(SFT, config)
    assert fingerprint(SFT, config, inputs_of(SFT), {}) == base
    licensed = fingerprint(SFT, config, inputs_of(SFT), {DIGEST_A: "apache-2.0"})
    assert licensed != base
    payload = fingerprint_payload(SFT, config, inputs_of(SFT), {DIGEST_A: "apache-2.0"})
    assert payload["source_licenses"] == {DIGEST_A: "apache-2.0"}
    assert fingerprint(SFT, config, inputs_of(SFT), {DIGEST_A: "mit"}) != licensed


# --- the code version -----------------------------------------------------------------------------

KIND_INIT = '''"""A throwaway kind."""
from {pkg}.helper import double
from cairn.stage import ArtifactType, InputSlot, StageConfig, StageSpec


def run(config, inputs, ctx):
    return {{}}


SPEC = StageSpec(
    kind="{pkg}", config_model=StageConfig, run=run,
    inputs={{"data": InputSlot(ArtifactType.RAW)}}, outputs={{"dataset": ArtifactType.DATASET}},
    shared_code=("{shared}", "{sharedpkg}"),
)
'''
SINGLE = '''"""A kind written as one module."""
from cairn.stage import ArtifactType, StageConfig, StageSpec


def run(config, inputs, ctx):
    return {{}}


SPEC = StageSpec(kind="{name}", config_model=StageConfig, run=run, inputs={{}},
                 outputs={{"dataset": ArtifactType.DATASET}})
'''


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A kind as a package (its own folder with a helper module and a subpackage), one shared
    module and one shared package, all importable from tmp_path; the files by role."""
    tag = uuid.uuid4().hex[:8]
    pkg, shared, sharedpkg, single = (
        f"{n}_{tag}" for n in ("toykind", "toyshared", "toylib", "toyone")
    )
    root = tmp_path / "src"
    (root / pkg / "sub").mkdir(parents=True)
    (root / pkg / "__init__.py").write_text(
        KIND_INIT.format(pkg=pkg, shared=shared, sharedpkg=sharedpkg)
    )
    (root / pkg / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    (root / pkg / "sub" / "__init__.py").write_text("")
    (root / pkg / "sub" / "deep.py").write_text("K = 1\n")
    (root / pkg / "README.md").write_text("notes\n")
    (root / f"{shared}.py").write_text("SCALE = 1\n")
    (root / sharedpkg).mkdir()
    (root / sharedpkg / "__init__.py").write_text("")
    (root / sharedpkg / "ops.py").write_text("def op():\n    return 1\n")
    (root / f"{single}.py").write_text(SINGLE.format(name=single))
    (root / "unrelated.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    files = {
        "init": root / pkg / "__init__.py",
        "helper": root / pkg / "helper.py",
        "deep": root / pkg / "sub" / "deep.py",
        "readme": root / pkg / "README.md",
        "shared": root / f"{shared}.py",
        "sharedpkg": root / sharedpkg / "ops.py",
        "single": root / f"{single}.py",
        "unrelated": root / "unrelated.py",
    }
    yield {
        "spec": importlib.import_module(pkg).SPEC,
        "single": importlib.import_module(single).SPEC,
        "files": files,
    }
    for name in list(sys.modules):
        if name.split(".")[0] in (pkg, shared, sharedpkg, single):
            del sys.modules[name]


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "# edited\n")


@pytest.mark.parametrize("role", ["init", "helper", "deep", "shared", "sharedpkg"])
def test_editing_any_module_of_the_kind_or_its_shared_code_changes_the_code_version(
    toy: dict, role: str
) -> None:
    spec = toy["spec"]
    before, before_fp = spec.code_version(), fingerprint(spec, StageConfig(), {"data": [DIGEST_A]})
    original = toy["files"][role].read_text()
    _edit(toy["files"][role])
    assert spec.code_version() != before
    assert fingerprint(spec, StageConfig(), {"data": [DIGEST_A]}) != before_fp
    toy["files"][role].write_text(original)
    assert spec.code_version() == before  # content, not modification time


@pytest.mark.parametrize("role", ["readme", "unrelated", "single"])
def test_files_outside_the_kind_and_its_shared_code_do_not_count(toy: dict, role: str) -> None:
    before = toy["spec"].code_version()
    _edit(toy["files"][role])
    assert toy["spec"].code_version() == before


def test_a_kind_written_as_one_module_is_that_module(toy: dict) -> None:
    single = toy["single"]
    before = single.code_version()
    _edit(toy["files"]["unrelated"])  # a module beside it: not part of the kind
    assert single.code_version() == before
    _edit(toy["files"]["single"])
    assert single.code_version() != before


def test_renaming_a_module_in_the_folder_changes_the_code_version(toy: dict) -> None:
    before = toy["spec"].code_version()
    deep = toy["files"]["deep"]
    deep.rename(deep.with_name("renamed.py"))
    assert toy["spec"].code_version() != before


def test_built_in_kinds_sharing_a_base_still_have_their_own_code_version() -> None:
    # sft and dpo share cairn.stages.posttrain (their shared_code) but not their own folders.
    assert stages.get("sft").code_version() != stages.get("dpo").code_version()
    assert stages.get("sft").code_version() == stages.get("sft").code_version()


def test_a_missing_shared_code_module_is_an_error_naming_it() -> None:
    broken = dataclasses.replace(PRETRAIN, shared_code=("cairn.stage.no_such_module",))
    with pytest.raises(ModuleNotFoundError, match="'pretrain'.*cairn.stage.no_such_module"):
        broken.code_version()


def test_a_cache_key_imports_no_ray_or_torch_and_is_the_same_in_a_fresh_process() -> None:
    # pretrain and sft name cairn.stage.raytrain (which imports Ray Train and torch) as shared
    # code: its file is hashed, but the engine must not import it to find that file. The key
    # must not depend on the process either (no hash(), no set order): a fresh interpreter
    # with another hash seed computes the same one.
    code = (
        "import json, sys\n"
        "from cairn import stages\n"
        "from cairn.engine.fingerprint import fingerprint\n"
        "from cairn.stages.pretrain import PretrainConfig\n"
        "for kind in stages.kinds():\n"
        "    stages.get(kind).code_version()\n"
        "for kind in ('sft', 'dpo'):\n"
        "    spec = stages.get(kind)\n"
        "    fingerprint(spec, spec.config_model(), {'model': ['a' * 64]})\n"
        "key = fingerprint(stages.get('pretrain'), PretrainConfig(), {'dataset': ['a' * 64]})\n"
        "heavy = [m for m in ('ray', 'torch', 'transformers', 'trl') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'key': key}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": PLATFORM},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["heavy"] == []
    assert result["key"] == fp(PRETRAIN, PretrainConfig(), {"dataset": [DIGEST_A]})
