"""Tests of the `evaluate` stage kind: the report, scores against samples, task folders, errors.

Each test runs the real stage (and the real lm-evaluation-harness) inline through
`local_context` on the tiny random model of `tests/tiny.py`. The shipped Shakespeare suite runs
once per module with a document limit; the other tests use small task folders written here, and
the error tests fail before any model is loaded. Exact agreement with the `lm_eval` command line
is in tests/unit/stages/evaluate/test_taskfolders.py and tests/integration/test_lifecycle.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from cairn.artifacts.store import ArtifactStore
from cairn.errors import StageError, StepCancelled
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.curate import decontam
from cairn.stages.evaluate import SPEC, EvaluateConfig, harness
from cairn.testing import local_context
from tests import REPO
from tests.tiny import make_tiny_model

SUITE = REPO / "workflows" / "evals" / "shakespeare"
MODEL_DIGEST = "ab" * 32
LIMIT = 40


def inputs(model: Path, task_dir: Path) -> dict[str, InputArtifact]:
    return {
        "model": InputArtifact(model, ArtifactType.MODEL, MODEL_DIGEST, name="model.model"),
        "tasks": InputArtifact(task_dir, ArtifactType.RAW, "cd" * 32, name=task_dir.name),
    }


def evaluate(root: Path, model: Path | InputArtifact, task_dir: Path, **config):
    """Run the stage; returns (metadata, output dir, reported records).

    The tiny model is a bare directory, not an artifact with a curated dataset in its lineage,
    so nothing checked the tasks' data against its training data: unless a test says otherwise,
    it runs with allow_contaminated (the gate's own tests are at the end of this file).
    """
    config.setdefault("allow_contaminated", True)
    ctx = local_context(root)
    given = inputs(model, task_dir) if isinstance(model, Path) else inputs(model.path, task_dir)
    if isinstance(model, InputArtifact):
        given["model"] = model
    result = SPEC.run(EvaluateConfig(**config), given, ctx)
    ctx.flush()
    return result["eval_report"], ctx.outputs_root / "eval_report", ctx.reporter.drain()


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_task(folder: Path, name: str, text: str, data: dict[str, list[dict]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    for file, docs in data.items():
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def suite_run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    return evaluate(root, tiny_model, SUITE, tasks=["shakespeare"], limit=LIMIT)


# --- the kind and its config --------------------------------------------------------------------


def test_importing_the_kind_does_not_import_the_harness():
    code = (
        "import sys, cairn.stages as s; spec = s.get('evaluate'); "
        "print(spec.kind, sorted(m for m in ('lm_eval', 'torch', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["evaluate", "[]"]


def test_config_forbids_unknown_fields_and_keeps_batch_size_out_of_identity():
    with pytest.raises(ValidationError, match="extra"):
        EvaluateConfig(tasks=["shakespeare"], bogus=1)
    with pytest.raises(ValidationError):
        EvaluateConfig(tasks=[])
    with pytest.raises(ValidationError):
        EvaluateConfig(tasks=["x"], device="tpu")
    a = EvaluateConfig(tasks=["shakespeare"], batch_size=4)
    b = EvaluateConfig(tasks=["shakespeare"], batch_size=64)
    assert a.identity() == b.identity() and "batch_size" not in a.identity()
    assert a.identity() != EvaluateConfig(tasks=["shakespeare"], seed=7).identity()
    # Letting unchecked tasks through changes what the report says: a different artifact.
    assert a.identity() != EvaluateConfig(tasks=["shakespeare"], allow_contaminated=True).identity()


# --- the report ---------------------------------------------------------------------------------


def test_report_names_the_model_versions_settings_and_files(suite_run, tiny_model):
    meta, out, _ = suite_run
    report = json.loads((out / "report.json").read_text())
    assert meta["model_digest"] == report["model"]["digest"] == MODEL_DIGEST
    assert report["model"]["name"] == "model.model"
    assert report["harness"] == {
        "name": "lm-evaluation-harness",
        "package": "lm_eval",
        "version": metadata.version("lm_eval"),
    }
    for package in ("torch", "transformers", "lm_eval", "datasets", "tokenizers"):
        assert report["versions"][package] == metadata.version(package)
    settings = report["settings"]
    assert settings["backend"] == "hf" and settings["device"] == "cpu"
    assert settings["dtype"] == "float32" and settings["limit"] == LIMIT
    assert settings["seeds"] == {"random": 1234, "numpy": 1234, "torch": 1234, "fewshot": 1234}
    # The model is named by digest, not by a path of the machine that ran the step: the
    # reproduce command expects it beside the report's tasks/.
    assert settings["model_args"] == {"pretrained": "../model", "dtype": "float32"}
    assert str(tiny_model) not in (out / "report.json").read_text()
    assert settings["max_length"] == 256  # the tiny model's max_position_embeddings
    # The curate tokenizer adds no BOS: contexts are scored without one, and rolling perplexity
    # is conditioned on <|endoftext|> (id 0), lm-eval's prefix token.
    assert settings["bos"]["contexts_start_with_bos"] is False
    assert settings["bos"]["rolling_prefix_token"] == ["<|endoftext|>", 0]

    # Every digest is the sha256 of the file, both in the input and in the report's copy.
    suite_files = sorted(p.name for p in SUITE.iterdir())
    assert sorted(report["tasks_input"]["files"]) == suite_files
    for name, digest in report["tasks_input"]["files"].items():
        assert digest == sha256(SUITE / name) == sha256(out / "tasks" / name)
    tasks = report["tasks"]
    assert sorted(tasks) == [
        "shakespeare_finish_line",
        "shakespeare_heldout",
        "shakespeare_next_word",
    ]
    expected = {
        "shakespeare_next_word": ("next_word", "multiple_choice", ["acc", "acc_norm"]),
        "shakespeare_finish_line": ("finish_line", "generate_until", ["exact_match"]),
        "shakespeare_heldout": (
            "heldout",
            "loglikelihood_rolling",
            ["word_perplexity", "byte_perplexity", "bits_per_byte"],
        ),
    }
    for task, (stem, output_type, metrics) in expected.items():
        entry = tasks[task]
        assert entry["yaml"] == [{"path": f"{stem}.yaml", "sha256": sha256(SUITE / f"{stem}.yaml")}]
        assert entry["data"] == [
            {"path": f"{stem}.jsonl", "sha256": sha256(SUITE / f"{stem}.jsonl")}
        ]
        assert entry["resolved"]["output_type"] == output_type
        assert entry["resolved"]["num_fewshot"] == 0
        assert [m["metric"] for m in entry["resolved"]["metric_list"]] == metrics
        assert entry["n_samples"]["effective"] == LIMIT
        # Reported as written, not as the scratch copy's absolute path.
        assert entry["config"]["dataset_kwargs"] == {"data_files": {"test": f"{stem}.jsonl"}}
    assert tasks["shakespeare_finish_line"]["resolved"]["filter_list"][0]["filter"] == [
        {"function": "remove_whitespace"},
        {"function": "take_first"},
    ]
    argv = report["reproduce"]["argv"]
    assert argv[:2] == ["lm_eval", "run"] and argv[argv.index("--tasks") + 1] == "shakespeare"
    assert argv[argv.index("--limit") + 1] == str(LIMIT)
    assert argv[argv.index("--model_args") + 1] == "pretrained=../model,dtype=float32"
    assert MODEL_DIGEST in report["reproduce"]["needs"]["model/"]


def test_scores_agree_with_the_per_sample_records(suite_run):
    meta, out, _ = suite_run
    report = json.loads((out / "report.json").read_text())
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "shakespeare_finish_line.jsonl",
        "shakespeare_heldout.jsonl",
        "shakespeare_next_word.jsonl",
    ]
    scores = report["scores"]

    mc = rows(out / "samples" / "shakespeare_next_word.jsonl")
    assert len(mc) == LIMIT
    for row in mc:
        lls = np.array([r[0][0] for r in row["resps"]])
        lengths = np.array([len(c) for c in row["doc"]["choices"]])
        assert row["acc"] == float(np.argmax(lls) == row["doc"]["label"])
        assert row["acc_norm"] == float(np.argmax(lls / lengths) == row["doc"]["label"])
    for metric in ("acc", "acc_norm"):
        value = scores["shakespeare_next_word"][metric]["value"]
        assert 0.0 <= value <= 1.0
        assert value == pytest.approx(np.mean([r[metric] for r in mc]), abs=1e-12)

    gen = rows(out / "samples" / "shakespeare_finish_line.jsonl")
    assert len(gen) == LIMIT
    assert all(r["filtered_resps"][0] == r["filtered_resps"][0].strip() for r in gen)
    assert scores["shakespeare_finish_line"]["exact_match"]["filter"] == "strip"
    assert scores["shakespeare_finish_line"]["exact_match"]["value"] == pytest.approx(
        np.mean([r["exact_match"] for r in gen]), abs=1e-12
    )

    ppl = rows(out / "samples" / "shakespeare_heldout.jsonl")
    assert len(ppl) == LIMIT
    ll = sum(r["word_perplexity"][0] for r in ppl)
    words = sum(r["word_perplexity"][1] for r in ppl)
    n_bytes = sum(len(r["doc"]["text"].encode()) for r in ppl)
    assert all(r["byte_perplexity"][1] == len(r["doc"]["text"].encode()) for r in ppl)
    held = scores["shakespeare_heldout"]
    assert held["word_perplexity"]["value"] == pytest.approx(math.exp(-ll / words), rel=1e-9)
    assert held["byte_perplexity"]["value"] == pytest.approx(math.exp(-ll / n_bytes), rel=1e-9)
    assert held["bits_per_byte"]["value"] == pytest.approx(-ll / n_bytes / math.log(2), rel=1e-9)
    assert held["byte_perplexity"]["value"] > 1.0

    assert meta["metrics"] == report["metrics"]
    assert meta["metrics"] == {
        f"{task}/{metric}": entry["value"]
        for task, metrics in scores.items()
        for metric, entry in metrics.items()
    }
    assert len(meta["metrics"]) == 6


def test_stage_reports_progress_and_a_score_table(suite_run):
    _, _, records = suite_run
    progress = [r for r in records if r["type"] == "progress"]
    phases = {
        r["message"].split()[0] for r in progress if r["message"].endswith(tuple("0123456789"))
    }
    assert phases == {"loglikelihood", "generate_until", "loglikelihood_rolling"}
    assert all(r["done"] <= r["total"] for r in progress if r["total"])
    logs = "\n".join(r["message"] for r in records if r["type"] == "log")
    assert "|shakespeare_next_word" in logs.replace(" - ", "|") and "bits_per_byte" in logs


# --- task folders -------------------------------------------------------------------------------


MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: choices
doc_to_target: label
metric_list: [{metric: acc}]
"""
GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs: {data_files: {test: gen.jsonl}}
test_split: test
output_type: generate_until
doc_to_text: "{{context}}"
doc_to_target: "{{target}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 4, do_sample: false}
filter_list:
  - name: strip
    filter: [{function: remove_whitespace}, {function: take_first}]
metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]
"""
CONTEXTS = [
    "Now is the winter of our discontent",
    "Friends, Romans, countrymen, lend me",
    "If music be the food of love,",
    "All the world's a stage, and all the",
]


def greedy(model_dir: Path, context: str, tokens: int) -> str:
    """What lm-eval's generate_until should return: greedy tokens, decoded, cut at a newline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(context, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=tokens, do_sample=False, pad_token_id=1)
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0]


def loglikelihood(model_dir: Path, context: str, continuation: str, bos: bool = False) -> float:
    """Summed log-softmax of the continuation's tokens after the context (and BOS, if asked)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prefix = [tok.bos_token_id] if bos else []
    whole = prefix + tok.encode(context + continuation)
    ctx_len = len(prefix) + len(tok.encode(context))
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0], -1)
    return sum(logp[i - 1, whole[i]].item() for i in range(ctx_len, len(whole)))


@pytest.fixture
def task_folder(tmp_path, tiny_model) -> Path:
    """A group over a nested YAML (data relative to its own folder) and a top-level one, plus a
    task whose data is missing but that is never asked for."""
    folder = tmp_path / "my_tasks"
    choices = ["day", "night", "sun", "moon"]
    write_task(
        folder / "nested",
        "mc.yaml",
        MC_YAML,
        {
            "data/mc.jsonl": [
                {"context": c, "choices": choices, "label": i} for i, c in enumerate(CONTEXTS)
            ]
        },
    )
    # Half the targets are what greedy decoding gives, half cannot be: exact_match is 0.5.
    gen = [
        {"context": c, "target": greedy(tiny_model, c, 4).strip() if i % 2 == 0 else "zzzz"}
        for i, c in enumerate(CONTEXTS)
    ]
    write_task(folder, "gen.yaml", GEN_YAML, {"gen.jsonl": gen})
    write_task(folder, "group.yaml", "group: tiny\ntask: [tiny_mc, tiny_gen]\n", {})
    broken = MC_YAML.replace("tiny_mc", "tiny_broken").replace("data/mc.jsonl", "gone.jsonl")
    write_task(folder, "broken.yaml", broken, {})
    return folder


def test_relative_data_paths_resolve_from_any_working_directory(
    tmp_path, tiny_model, task_folder, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the task folder nor the repository
    meta, out, _ = evaluate(tmp_path / "run", tiny_model, task_folder, tasks=["tiny"], batch_size=1)
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["tiny_mc"]["data"] == [
        {"path": "nested/data/mc.jsonl", "sha256": sha256(task_folder / "nested/data/mc.jsonl")}
    ]
    assert report["tasks"]["tiny_mc"]["yaml"][0]["path"] == "nested/mc.yaml"
    assert report["tasks_input"]["anchored_paths"]["nested/mc.yaml"] == [
        "dataset_kwargs.data_files"
    ]
    assert meta["metrics"]["tiny_gen/exact_match"] == 0.5
    # Each choice's loglikelihood is transformers' log-softmax sum with no BOS prepended.
    mc = rows(out / "samples" / "tiny_mc.jsonl")
    assert len(mc) == len(CONTEXTS)
    for row, context in zip(mc, CONTEXTS, strict=True):
        for (ll, _), choice in zip(
            (r[0] for r in row["resps"]), ["day", "night", "sun", "moon"], strict=True
        ):
            assert ll == pytest.approx(loglikelihood(tiny_model, context, " " + choice), abs=1e-4)
    # The input is untouched; the report's copy names the data as lm_eval run reads it from
    # tasks/ (tests/unit/stages/evaluate/test_reproduce.py runs it), and says so.
    assert (task_folder / "nested" / "mc.yaml").read_text() == MC_YAML
    shipped = (out / "tasks" / "nested" / "mc.yaml").read_text()
    assert shipped == MC_YAML.replace("test: data/mc.jsonl", 'test: "nested/data/mc.jsonl"')
    assert report["tasks_input"]["rewritten_for_cli"]["nested/mc.yaml"] == {
        "input_sha256": sha256(task_folder / "nested" / "mc.yaml"),
        "sha256": sha256(out / "tasks" / "nested" / "mc.yaml"),
        "paths": {"dataset_kwargs.data_files.test": ["data/mc.jsonl", "nested/data/mc.jsonl"]},
    }
    assert not list(elsewhere.iterdir())


def test_add_bos_token_prepends_bos_to_contexts_and_says_so(tmp_path, tiny_model, task_folder):
    meta, out, records = evaluate(
        tmp_path / "run", tiny_model, task_folder, tasks=["tiny_mc"], add_bos_token=True
    )
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["bos"]["contexts_start_with_bos"] is True
    assert report["settings"]["model_args"]["add_bos_token"] is True
    assert ",add_bos_token=True" in report["reproduce"]["command"]
    row = rows(out / "samples" / "tiny_mc.jsonl")[0]
    ll = row["resps"][0][0][0]
    assert ll == pytest.approx(loglikelihood(tiny_model, CONTEXTS[0], " day", bos=True), abs=1e-4)
    assert ll != pytest.approx(loglikelihood(tiny_model, CONTEXTS[0], " day"), abs=1e-4)


def test_unknown_task_lists_the_available_ones(tmp_path, tiny_model):
    with pytest.raises(StageError) as err:
        evaluate(tmp_path, tiny_model, SUITE, tasks=["shakespeare_next_wrod"])
    message = str(err.value)
    assert "task 'shakespeare_next_wrod' is not defined" in message
    assert "did you mean 'shakespeare_next_word'" in message
    for name in ("shakespeare", "shakespeare_finish_line", "shakespeare_heldout"):
        assert name in message


def test_missing_data_file_names_the_yaml_field_and_path(tmp_path, tiny_model):
    suite = tmp_path / "suite"
    shutil.copytree(SUITE, suite)
    (suite / "next_word.jsonl").unlink()
    with pytest.raises(StageError) as err:
        evaluate(tmp_path / "run", tiny_model, suite, tasks=["shakespeare"])
    message = str(err.value)
    assert (
        f"{suite}/next_word.yaml: dataset_kwargs.data_files.test: 'next_word.jsonl' does not exist"
        in message
    )
    assert str(suite / "next_word.jsonl") in message
    assert "fix:" in message


def test_hub_dataset_is_rejected_as_not_offline(tmp_path, tiny_model):
    folder = tmp_path / "hub"
    write_task(
        folder,
        "wiki.yaml",
        MC_YAML.replace("dataset_path: json", "dataset_path: org/wiki"),
        {"data/mc.jsonl": [{}]},
    )
    with pytest.raises(StageError, match="'org/wiki', a Hugging Face Hub dataset"):
        evaluate(tmp_path / "run", tiny_model, folder, tasks=["tiny_mc"])


def test_model_without_tokenizer_is_rejected(tmp_path, tiny_model):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, bare / name)
    with pytest.raises(StageError, match="has no tokenizer .*tokenizer.save_pretrained"):
        evaluate(tmp_path / "run", bare, SUITE, tasks=["shakespeare"])


def test_max_length_beyond_the_model_positions_is_rejected(tmp_path, tiny_model):
    with pytest.raises(StageError, match="max_length 1024 exceeds the 256 positions"):
        evaluate(tmp_path, tiny_model, SUITE, tasks=["shakespeare"], max_length=1024)


def test_cancelling_stops_between_forward_passes(tmp_path, tiny_model, monkeypatch):
    ctx = local_context(tmp_path)
    report = ctx.progress

    def progress(done, total=None, message=""):
        report(done, total, message)
        if message == "loglikelihood batch 1":  # the first forward pass is done: cancel now
            ctx.reporter.cancel()
            ctx._last_cancel_check = 0.0  # let the next check ask the reporter at once

    monkeypatch.setattr(ctx, "progress", progress)
    config = EvaluateConfig(
        tasks=["shakespeare_next_word"], limit=4, batch_size=2, allow_contaminated=True
    )
    with pytest.raises(StepCancelled):
        SPEC.run(config, inputs(tiny_model, SUITE), ctx)
    assert not (ctx.outputs_root / "eval_report" / "report.json").exists()


# --- the decontamination gate -------------------------------------------------------------------
# Models here are sealed artifacts whose lineage holds a curated dataset, built as the engine
# would seal them but without training: dataset.json carries (or lacks) the `decontamination`
# record that curate writes with decontam.report over the same task folder.

PLANTED = "From a commonplace book: All the world's a STAGE,  and all the moon. Then prose."
CLEAN = "Of all the stories told in winter, this one is the longest and the least true."


@pytest.fixture
def gate_tasks(tmp_path) -> Path:
    folder = tmp_path / "gate_tasks"
    choices = ["day", "night", "sun", "moon"]
    rows = [{"context": c, "choices": choices, "label": i} for i, c in enumerate(CONTEXTS)]
    write_task(folder, "mc.yaml", MC_YAML, {"data/mc.jsonl": rows})
    return folder


def curated_model(
    root: Path,
    tiny_model: Path,
    checked: list[Path] | None,
    docs: list[str],
    *,
    parent_model: Path | None = None,
) -> InputArtifact:
    """A `model` artifact pretrained on a `dataset` artifact whose curate step had `checked` as
    its eval_tasks (None: no eval_tasks). With `parent_model`, the model is instead an sft step
    on that external directory, with the dataset-trained model nowhere in its lineage."""
    store = ArtifactStore(root / "store")
    staging = root / "stage-ds"
    staging.mkdir(parents=True)
    info: dict = {"seq_len": 64, "sources": {"./corpus.txt": {"documents_in": len(docs)}}}
    if checked is not None:
        cfg = decontam.DecontamConfig()
        index = decontam.EvalIndex.build([(f"./{d.name}", d) for d in checked], cfg)
        found = [
            decontam.record(f"doc{i}", "./corpus.txt", items, cfg.action)
            for i, text in enumerate(docs)
            if (items := index.matches(text))
        ]
        info["decontamination"] = decontam.report(index, cfg, found)
        (staging / "decontamination.jsonl").write_text("".join(json.dumps(r) + "\n" for r in found))
    (staging / "dataset.json").write_text(json.dumps(info))
    # The raw source does not exist: the gate must not re-read (or re-hash) raw parents.
    source = {"slot": "sources", "digest": "0" * 64, "type": "raw", "uri": str(root / "gone")}
    dataset = store.seal(
        staging,
        "curate/corpus/f/dataset",
        {"type": "dataset", "kind": "curate", "step": "corpus", "parents": [source]},
    )
    shutil.copytree(tiny_model, root / "stage-pt")
    parent = {"slot": "dataset", "digest": dataset.digest, "type": "dataset", "uri": dataset.uri}
    if parent_model is not None:
        parent = {"slot": "model", "digest": "e" * 64, "type": "model", "uri": str(parent_model)}
    model = store.seal(
        root / "stage-pt",
        "pretrain/base/f/model",
        {"type": "model", "kind": "pretrain", "step": "base", "parents": [parent]},
    )
    return InputArtifact(Path(model.uri), ArtifactType.MODEL, model.digest, name="base.model")


def refusal(tmp_path: Path, model: Path | InputArtifact, task_dir: Path, monkeypatch) -> str:
    """The stage's error, checking that lm-eval never ran and that nothing was written."""

    def never(*args, **kwargs):
        raise AssertionError("lm-eval ran although the gate should have refused")

    monkeypatch.setattr(harness, "evaluate", never)
    with pytest.raises(StageError) as err:
        evaluate(tmp_path / "run", model, task_dir, tasks=["tiny_mc"], allow_contaminated=False)
    out = tmp_path / "run" / "outputs" / "eval_report"
    assert not out.exists() or not any(out.rglob("*"))
    return str(err.value)


def test_a_planted_item_is_caught_and_evaluate_refuses_until_allowed(
    tmp_path, tiny_model, gate_tasks, monkeypatch
):
    """The issue's case: curate without eval_tasks -> evaluate refuses; allowed -> scored and
    said so; curate with eval_tasks -> the planted item is caught and the task is scored."""
    docs = [CLEAN, PLANTED]
    unchecked = curated_model(tmp_path / "a", tiny_model, None, docs)
    with monkeypatch.context() as m:
        message = refusal(tmp_path / "r", unchecked, gate_tasks, m)
    assert "refuses to score 1 task(s)" in message
    assert "tiny_mc: dataset step 'corpus'" in message and "did not check data/mc.jsonl" in message
    assert "fix: add gate_tasks to the curate step's `eval_tasks` input" in message
    assert "`allow_contaminated: true` on this evaluate step" in message

    meta, out, records = evaluate(
        tmp_path / "allowed", unchecked, gate_tasks, tasks=["tiny_mc"], allow_contaminated=True
    )
    record = json.loads((out / "report.json").read_text())["contamination"]
    assert record["allowed"] is True and record["checked"] is False
    assert list(record["unchecked"]) == ["tiny_mc"]
    assert record["datasets"][0]["step"] == "corpus" and record["datasets"][0]["ngram"] is None
    assert meta["allow_contaminated"] is True
    assert meta["contamination"] == {
        "allowed": True,
        "checked": False,
        "unchecked_tasks": ["tiny_mc"],
        "contaminated_docs": {},
    }
    logs = "\n".join(r["message"] for r in records if r["type"] == "log")
    assert "allow_contaminated is true: scoring 1 task(s)" in logs

    checked = curated_model(tmp_path / "b", tiny_model, [gate_tasks], docs)
    found = tmp_path / "b" / "store" / "curate/corpus/f/dataset/decontamination.jsonl"
    assert [json.loads(x)["doc_id"] for x in found.read_text().splitlines()] == ["doc1"]
    meta, out, _ = evaluate(
        tmp_path / "checked", checked, gate_tasks, tasks=["tiny_mc"], allow_contaminated=False
    )
    record = json.loads((out / "report.json").read_text())["contamination"]
    assert record["allowed"] is False and record["checked"] is True and record["unchecked"] == {}
    assert record["tasks"]["tiny_mc"] == {
        "data": [{"path": "data/mc.jsonl", "sha256": sha256(gate_tasks / "data/mc.jsonl")}],
        "checked_by": ["corpus"],
        "contaminated_docs": {"removed": 1},
    }
    assert record["contaminated_docs"] == {"removed": 1}
    assert record["datasets"][0]["ngram"] == 8 and record["datasets"][0]["files_checked"] == 1
    assert meta["allow_contaminated"] is False and meta["contamination"]["checked"] is True
    assert meta["metrics"]["tiny_mc/acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_a_task_file_changed_after_the_check_is_refused(
    tmp_path, tiny_model, gate_tasks, monkeypatch
):
    model = curated_model(tmp_path / "m", tiny_model, [gate_tasks], [CLEAN])
    edited = tmp_path / "edited"
    shutil.copytree(gate_tasks, edited)
    with (edited / "data/mc.jsonl").open("a") as f:
        f.write(json.dumps({"context": "A new item", "choices": ["a", "b"], "label": 0}) + "\n")
    message = refusal(tmp_path, model, edited, monkeypatch)
    assert "tiny_mc: dataset step 'corpus'" in message and "did not check data/mc.jsonl" in message
    assert "fix: add edited to the curate step's `eval_tasks` input" in message


def test_a_model_without_a_checked_lineage_is_refused(
    tmp_path, tiny_model, gate_tasks, monkeypatch
):
    # A bare Hugging Face directory: nothing in Cairn knows what it was trained on.
    message = refusal(tmp_path / "bare", tiny_model, gate_tasks, monkeypatch)
    assert "model model.model was trained outside Cairn" in message  # as the workflow named it
    assert f"(model model.model is {tiny_model})" in message
    # A model fine-tuned in Cairn from an external base: the base's data was never checked,
    # and no dataset is in its lineage.
    sft = curated_model(tmp_path / "sft", tiny_model, [gate_tasks], [], parent_model=tiny_model)
    message = refusal(tmp_path / "ext", sft, gate_tasks, monkeypatch)
    assert "the model's lineage has no curated dataset" in message
    assert f"model {tiny_model} was trained outside Cairn" in message


def test_the_suite_run_records_that_it_was_allowed(suite_run):
    meta, out, _ = suite_run
    record = json.loads((out / "report.json").read_text())["contamination"]
    assert record["allowed"] is True and record["checked"] is False
    assert sorted(record["unchecked"]) == [
        "shakespeare_finish_line",
        "shakespeare_heldout",
        "shakespeare_next_word",
    ]
    assert record["tasks"]["shakespeare_heldout"]["data"] == [
        {"path": "heldout.jsonl", "sha256": sha256(SUITE / "heldout.jsonl")}
    ]
    assert meta["allow_contaminated"] is True and meta["contamination"]["checked"] is False
