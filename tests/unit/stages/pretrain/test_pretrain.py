"""Tests of the `pretrain` stage kind: config checks, a tiny real run, determinism and resume.

The Ray tests train a ~60k-parameter model for a few dozen steps on a dataset built here (a tiny
byte-level BPE over patterned English-ish sentences, so the loss falls fast) with 2 workers × 1
CPU. They share one reference run (module-scoped fixture) to stay well under a minute and a half.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from cairn.errors import StageError
from cairn.stage import ArtifactType, InputArtifact, Resources
from cairn.stages.pretrain import SPEC, PretrainConfig
from cairn.stages.pretrain.driver import measured
from cairn.testing import local_context

SEQ_LEN = 64
TWO_WORKERS = Resources(num_workers=2, cpus_per_worker=1)
# Small enough to run in seconds; head_dim 32 is the smallest vLLM accepts.
TINY = dict(
    hidden_size=64,
    num_heads=2,
    num_layers=2,
    intermediate_size=128,
    global_batch_size=8,
    max_steps=40,
    warmup_steps=5,
    lr=1e-2,
    checkpoint_every=20,
    eval_every=20,
    eval_batches=2,
    log_every=5,
)


def build_dataset(root: Path, n_train: int = 192, n_val: int = 32, seq_len: int = SEQ_LEN) -> Path:
    """A directory laid out like the curate stage's `dataset` output, built in about a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    adjectives = ["quick", "lazy", "brown", "small", "old", "green", "happy", "quiet"]
    nouns = ["fox", "dog", "cat", "bird", "king", "queen", "river", "tree"]
    verbs = ["jumps over", "runs past", "looks at", "sings to", "waits for"]
    # ~11 tokens per sentence once BPE has merged the few words; generate ~25% more than needed.
    n_docs = (n_train + n_val) * seq_len // 32 + 100
    docs = [
        " ".join(
            f"the {rng.choice(adjectives)} {rng.choice(nouns)} {rng.choice(verbs)} "
            f"the {rng.choice(adjectives)} {rng.choice(nouns)}."
            for _ in range(rng.randint(2, 6))
        )
        for _ in range(n_docs)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    hf.save_pretrained(root / "tokenizer")
    eos = hf.eos_token_id
    stream: list[int] = []
    for doc in docs:
        stream.extend(hf.encode(doc) + [eos])
    n_rows = min(len(stream) // seq_len, n_train + n_val)
    rows = np.asarray(stream[: n_rows * seq_len], dtype=np.int32).reshape(n_rows, seq_len)
    assert n_rows == n_train + n_val, f"generated text too short: {n_rows} rows"
    for split, arr in (("train", rows[:n_train]), ("validation", rows[n_train:])):
        (root / split).mkdir(parents=True)
        np.save(root / split / "shard-00000.npy", arr)
    meta = {
        "seq_len": seq_len,
        "vocab_size": len(hf),
        "bos_token_id": hf.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": hf.pad_token_id,
        "train_sequences": n_train,
        "validation_sequences": n_val,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def dataset_input(path: Path) -> dict[str, InputArtifact]:
    return {"dataset": InputArtifact(path=path, type=ArtifactType.DATASET, digest="test")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("pretrain-data"))


# --- config ------------------------------------------------------------------------------------


def test_spec_contract() -> None:
    assert SPEC.kind == "pretrain" and SPEC.launcher == "trainer"
    assert SPEC.inputs["dataset"].type is ArtifactType.DATASET
    assert SPEC.outputs == {"model": ArtifactType.MODEL}
    assert SPEC.default_resources.num_workers == 2


def test_bad_head_dim_is_rejected_with_the_fix() -> None:
    with pytest.raises(ValidationError) as err:
        PretrainConfig(hidden_size=128, num_heads=8)  # head_dim 16
    msg = str(err.value)
    assert "head_dim" in msg and "vLLM" in msg and "num_heads: 4" in msg
    with pytest.raises(ValidationError, match="divisible by num_heads"):
        PretrainConfig(hidden_size=128, num_heads=3)


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="hidden_dim"):
        PretrainConfig(hidden_dim=128)


def test_defaults_resolve_and_runtime_fields_are_not_identity() -> None:
    cfg = PretrainConfig()
    assert cfg.num_kv_heads == cfg.num_heads and cfg.intermediate_size == 4 * cfg.hidden_size
    ident = cfg.identity()
    assert "log_every" not in ident and "max_failures" not in ident and "max_steps" in ident
    assert PretrainConfig(log_every=1).identity() == ident
    # Micro-batching is for memory (same batch, float rounding aside); sharding is identity.
    assert PretrainConfig(micro_batch_size=2).identity() == ident
    assert PretrainConfig(sharding="fsdp").identity() != ident
    with pytest.raises(ValidationError, match="num_kv_heads"):
        PretrainConfig(hidden_size=192, num_heads=3, num_kv_heads=2)


def test_batch_that_does_not_fit_is_a_stage_error(dataset: Path) -> None:
    from cairn.stages.pretrain.data import check_batch, inspect_dataset

    data = inspect_dataset(dataset)
    with pytest.raises(StageError, match="global_batch_size .* divisible by resources.num_workers"):
        check_batch(PretrainConfig(**TINY), data, Resources(num_workers=3))
    with pytest.raises(StageError, match="exceeds the 192 train sequences"):
        check_batch(PretrainConfig(**{**TINY, "global_batch_size": 256}), data, TWO_WORKERS)


def test_malformed_dataset_is_a_stage_error(dataset: Path, tmp_path: Path) -> None:
    from cairn.stages.pretrain.data import inspect_dataset

    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    (bad / "tokenizer").mkdir()
    meta = json.loads((dataset / "dataset.json").read_text())
    (bad / "dataset.json").write_text(json.dumps(meta))
    np.save(bad / "train" / "shard-00000.npy", np.zeros((4, SEQ_LEN + 1), dtype=np.int32))
    with pytest.raises(StageError, match="shard-00000.npy has shape"):
        inspect_dataset(bad)
    with pytest.raises(StageError, match="no dataset.json"):
        inspect_dataset(tmp_path)


def test_batch_order_is_a_function_of_the_step() -> None:
    from cairn.stages.pretrain.data import BatchOrder

    a, b = BatchOrder(100, 16, seed=3), BatchOrder(100, 16, seed=3)
    late = b.global_batch_at(13)  # b jumps straight to step 13, as a resumed run does
    early = [a.global_batch_at(s) for s in range(14)]
    assert np.array_equal(early[13], late)
    epoch0 = np.concatenate(early[:6])  # 6 full batches per epoch of 100
    assert len(set(epoch0.tolist())) == 96
    halves = [a.rank_batch_at(2, r, 2) for r in range(2)]
    assert np.array_equal(np.concatenate(halves), a.global_batch_at(2))


def test_sharding_rule() -> None:
    import torch

    from cairn.stages.pretrain import loop

    assert loop.uses_fsdp("auto", torch.device("cuda"))
    assert not loop.uses_fsdp("auto", torch.device("cpu"))
    assert loop.uses_fsdp("fsdp", torch.device("cpu"))
    assert not loop.uses_fsdp("ddp", torch.device("cuda"))


def test_throughput_clock_stops_for_validation_and_checkpoints(monkeypatch) -> None:
    """train/tokens_per_s is wall time over train steps: paused stretches are left out, and the
    clock restarts at each log record."""
    import torch

    from cairn.stages.pretrain import loop

    now = [100.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: now[0])
    w = loop._Window(torch.device("cpu"))
    now[0] += 2.0  # two train steps
    w.steps += 2
    w.pause()
    now[0] += 30.0  # a checkpoint: not timed
    w.resume()
    now[0] += 1.0
    w.steps += 1
    assert (w.steps, w.read()) == (3, 3.0)
    w.restart()
    now[0] += 0.5
    assert (w.steps, w.read()) == (0, 0.5)


# --- real runs on Ray --------------------------------------------------------------------------
# Each fit costs ~15-25 s of Ray Train start-up on 2 cores (controller and worker actors, torch
# imports) for ~2 s of training, so there are four fits: the reference, a DDP crash at step 25,
# and two resumes of copies of its checkpoints: one that must reproduce the reference's weights
# bit for bit (so it also covers determinism), and one under FSDP2. A worker killed inside a run,
# with the weights compared bit for bit, is tests/integration/test_worker_loss.py.


def _train(dataset: Path, root: Path, fail_at_step: int | None = None, **overrides):
    from cairn.stages.pretrain.driver import train

    ctx = local_context(root, resources=TWO_WORKERS)
    config = PretrainConfig(**{**TINY, **overrides})
    out = train(config, dataset_input(dataset), ctx, fail_at_step=fail_at_step)
    ctx.flush()
    return ctx, out, ctx.reporter.drain()


def _weights(ctx) -> bytes:
    return (ctx.output_path("model") / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def reference(ray_local, dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted tiny run that the other Ray tests compare against."""
    return _train(dataset, tmp_path_factory.mktemp("reference"))


@pytest.mark.ray
def test_tiny_run_learns_and_writes_a_loadable_model(reference) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ctx, out, records = reference
    info = out["model"]
    assert info["steps"] == 40 and info["architecture"] == "LlamaForCausalLM"
    assert info["tokens_seen"] == 40 * 8 * SEQ_LEN

    metrics = [r for r in records if r["type"] == "metrics"]
    train_rows = [r for r in metrics if "train/loss" in r["values"]]
    steps = [r["step"] for r in train_rows]
    assert steps == list(range(5, 41, 5))
    first, last = train_rows[0]["values"]["train/loss"], train_rows[-1]["values"]["train/loss"]
    assert last < 0.6 * first, (first, last)
    assert {"train/lr", "train/tokens_per_s", "train/tokens_seen"} <= set(train_rows[0]["values"])
    assert [r["step"] for r in metrics if "val/loss" in r["values"]] == [20, 40]
    assert info["final_val_loss"] < first and info["final_train_loss"] == last
    assert any(r["type"] == "progress" and r["done"] == 40 for r in records)

    model_dir = ctx.output_path("model")
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json"} <= names
    assert {"tokenizer.json", "training_metrics.jsonl", "checkpoints.json", "loss.png"} <= names
    # Only the exported weights of each checkpoint, never Ray Train's optimizer state.
    assert [n for n in names if (model_dir / n).is_dir()] == ["checkpoints"]
    history = [json.loads(line) for line in (model_dir / "training_metrics.jsonl").open()]
    # Wall-clock rates go to the tracker only: the artifact holds what training computed.
    assert history == [
        {"step": r["step"], **{k: v for k, v in r["values"].items() if not measured(k)}}
        for r in metrics
    ]
    index = json.loads((model_dir / "checkpoints.json").read_text())
    assert [(c["step"], c["tokens_seen"]) for c in index] == [
        (20, 20 * 8 * SEQ_LEN),
        (40, 40 * 8 * SEQ_LEN),
    ]
    assert all((ctx.checkpoint_dir / c["ray_checkpoint"]).is_dir() for c in index)
    assert [c["path"] for c in index] == ["checkpoints/step-0000020", "checkpoints/step-0000040"]
    # The last checkpoint is the released model, weight for weight.
    last_ckpt = AutoModelForCausalLM.from_pretrained(model_dir / index[-1]["path"])
    final = AutoModelForCausalLM.from_pretrained(model_dir)
    assert all(
        torch.equal(a, b)
        for a, b in zip(last_ckpt.state_dict().values(), final.state_dict().values(), strict=True)
    )

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.vocab_size % 64 == 0 and model.config.tie_word_embeddings
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    ids = tok("the quick", return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 8
    assert tok.decode(gen[0]).startswith("the quick")


@pytest.fixture(scope="module")
def crashed(ray_local, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint directory of a DDP run that crashed at step 25, after its step-20
    checkpoint, with no automatic restarts: the step failed. Two tests resume a copy of it (Ray
    Train names checkpoints relative to its storage path, so a copy resumes like the original)."""
    root = tmp_path_factory.mktemp("crashed")
    with pytest.raises(RuntimeError, match="re-running the step resumes"):
        _train(dataset, root, fail_at_step=25, max_failures=0)
    return root / "checkpoints"


def _resume_from(crashed: Path, root: Path) -> Path:
    shutil.copytree(crashed, root / "checkpoints")
    return root


@pytest.mark.ray
def test_crash_then_rerun_resumes_from_checkpoint(
    reference, crashed: Path, dataset: Path, tmp_path: Path
) -> None:
    ref_ctx, ref_out, _ = reference
    # The engine re-runs the same step with the same checkpoint_dir: training resumes at 20.
    ctx, out, records = _train(
        dataset, _resume_from(crashed, tmp_path), fail_at_step=25, max_failures=0
    )
    logs = [r["message"] for r in records if r["type"] == "log"]
    assert any("resumed from step 20" in m for m in logs), logs
    steps = [r["step"] for r in records if r["type"] == "metrics"]
    assert steps[0] == 25 and steps == sorted(steps)
    # Same batches, LR schedule and optimizer state: the same weights as never crashing.
    assert _weights(ctx) == _weights(ref_ctx)
    assert out == ref_out
    # The output's metric history is whole: the rows up to step 20 come from the checkpoint.
    ref_history = (ref_ctx.output_path("model") / "training_metrics.jsonl").read_text()
    history = (ctx.output_path("model") / "training_metrics.jsonl").read_text()
    assert _without_speed(history) == _without_speed(ref_history)

    # Re-running once more finds training finished and only re-exports (no Ray Train start).
    ctx, out, records = _train(dataset, tmp_path)
    assert out == ref_out and _weights(ctx) == _weights(ref_ctx)
    assert any("already finished" in r.get("message", "") for r in records)


def _without_speed(jsonl: str) -> list[dict]:
    rows = [json.loads(line) for line in jsonl.splitlines()]
    return [{k: v for k, v in r.items() if "_per_s" not in k} for r in rows]


@pytest.mark.ray
def test_fsdp2_with_micro_batches_resumes_a_ddp_checkpoint_and_trains_the_same_model(
    reference, crashed: Path, dataset: Path, tmp_path: Path
) -> None:
    """FSDP2 (fully_shard) on the CPU workers' gloo group: each worker holds half the state and
    accumulates its share of every step in micro-batches. It resumes from a step-20 checkpoint
    that an unsharded (DDP) group wrote, as an elastic group that grows from one worker to two
    does: checkpoints have one layout, the gathered state is scattered into the shards. The
    model is the DDP reference's to float32 rounding (sums are reduced in another order)."""
    import torch
    from safetensors.torch import load_file

    ref_ctx, ref_out, _ = reference
    # Micro-batches of 1 sequence: each worker's 4 add up their gradients before FSDP reduces.
    ctx, out, records = _train(
        dataset, _resume_from(crashed, tmp_path), sharding="fsdp", micro_batch_size=1
    )
    logs = [r["message"] for r in records if r["type"] == "log"]
    assert any("FSDP2 across 2 workers" in m for m in logs), logs
    assert any("resumed from step 20" in m for m in logs), logs
    assert out["model"]["steps"] == 40
    assert abs(out["model"]["final_train_loss"] - ref_out["model"]["final_train_loss"]) < 1e-3
    ours = load_file(str(ctx.output_path("model") / "model.safetensors"))
    theirs = load_file(str(ref_ctx.output_path("model") / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-3, atol=1e-3)
