"""The driver side of pretraining: check inputs, launch Ray Train, turn its result into the output.

`run` executes this in a zero-CPU Ray task (launcher "trainer"); the workers it starts hold the
step's CPUs/GPUs. Ray Train's own checkpoint directory stays under `ctx.checkpoint_dir` (the
engine keeps it per fingerprint, so a re-run resumes); only the exported Hugging Face model, the
metric history, and every kept checkpoint's weights (with an index) go into the output artifact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ray.train
from transformers import AutoTokenizer

from cairn.errors import StageError, StepCancelled
from cairn.stage import Context, InputArtifact, Inputs, Outputs, raytrain
from cairn.stage.plots import plot_losses
from cairn.stages.pretrain import data_order, rng
from cairn.stages.pretrain.config import PretrainConfig
from cairn.stages.pretrain.data import DatasetInfo, check_batch, inspect_dataset
from cairn.stages.pretrain.loop import read_state, train_loop
from cairn.stages.pretrain.model import ARCHITECTURE, count_parameters, export_model, llama_config


def train(
    config: PretrainConfig, inputs: Inputs, ctx: Context, *, fail_at_step: int | None = None
) -> Outputs:
    """Pretrain and export. `fail_at_step` is a test hook: every worker raises once at that step
    unless it resumed from a checkpoint, which is how the tests exercise crash recovery."""
    data = inspect_dataset(_dataset_input(inputs).path)
    res = ctx.resources
    check_batch(config, data, res)
    model_config = llama_config(config, data)
    if config.dtype == "bfloat16" and res.gpus_per_worker == 0:
        ctx.log("pretrain: dtype bfloat16 applies on CUDA only; these CPU workers use float32")

    result = raytrain.finished(ctx, lambda r: _trained_steps(r) >= config.max_steps)
    if result is not None:
        ctx.log("pretrain: training already finished in an earlier attempt; exporting its result")
    else:
        _check_resumable(ctx)
        result = _fit(config, data, model_config, ctx, fail_at_step)

    if result.checkpoint is None:
        raise RuntimeError(f"pretrain: Ray Train finished without a checkpoint ({result.path})")
    out = ctx.output_path("model")
    with result.checkpoint.as_directory() as ckpt_dir:
        state = read_state(Path(ckpt_dir))
        if state.step < config.max_steps:
            raise StepCancelled(
                f"pretrain: step '{ctx.step}' was cancelled at step {state.step}/"
                f"{config.max_steps}; its checkpoint is kept and a re-run resumes from it"
            )
        model = export_model(Path(ckpt_dir), model_config, out, ctx.checkpoint_dir)
        data_order.export(Path(ckpt_dir), data.root, data.seq_len, out)
    # local_files_only explicitly: transformers writes the flag it loaded with into
    # tokenizer_config.json, and left to the environment (HF_HUB_OFFLINE, set by an earlier task
    # in a reused Ray worker or not) it made identical trainings different artifacts.
    AutoTokenizer.from_pretrained(data.tokenizer_dir, local_files_only=True).save_pretrained(out)
    # The artifact keeps what the run computed; throughput and MFU (wall-clock rates) are a
    # fact about the machine, not the model, and would make identical trainings different
    # artifacts: they go to MLflow and the step's log only.
    (out / "training_metrics.jsonl").write_text(
        "".join(
            json.dumps({k: v for k, v in row.items() if not measured(k)}) + "\n"
            for row in state.history
        )
    )
    checkpoints = _export_checkpoints(result, model_config, data, out, ctx)
    (out / "checkpoints.json").write_text(json.dumps(checkpoints, indent=2))
    plot_losses(
        state.history, out / "loss.png", f"{ctx.step}: {count_parameters(model):,} parameters"
    )
    ctx.log(f"pretrain: wrote {ARCHITECTURE} ({count_parameters(model):,} parameters)")
    return {
        "model": {
            "parameters": count_parameters(model),
            "final_train_loss": state.train_loss,
            "final_val_loss": state.val_loss,
            "steps": state.step,
            "tokens_seen": state.tokens_seen,
            "architecture": ARCHITECTURE,
        }
    }


def _fit(
    config: PretrainConfig,
    data: DatasetInfo,
    model_config: Any,
    ctx: Context,
    fail_at_step: int | None,
) -> ray.train.Result:
    """Train on the step's Ray Train workers (`cairn.stage.raytrain.fit`)."""
    return raytrain.fit(
        ctx,
        train_loop,
        {
            "config": config,
            "dataset": data,
            "llama_config": model_config,
            "fail_at_step": fail_at_step,
        },
        config,
        explain=lambda e: _explain_failure(e, config, ctx),
    )


def _check_resumable(ctx: Context) -> None:
    """Refuse, before any worker starts, a latest checkpoint whose random-number state cannot be
    restored (missing, corrupt, or the pickled rng.pt of an older Cairn: rng.py). Each worker
    would refuse it too, and Ray Train would restart the group max_failures times first."""
    earlier = raytrain.finished(ctx, lambda _: True)  # the latest checkpoint, finished or not
    if earlier is not None and earlier.checkpoint is not None:
        with earlier.checkpoint.as_directory() as d:
            rng.read(Path(d), ctx.checkpoint_dir)


def _trained_steps(result: ray.train.Result) -> int:
    """How far the run behind `result` trained (its latest checkpoint's step)."""
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as d:
        return read_state(Path(d)).step


def _dataset_input(inputs: Inputs) -> InputArtifact:
    art = inputs.get("dataset")
    if not isinstance(art, InputArtifact):
        raise StageError(
            "pretrain: input 'dataset' must be exactly one dataset artifact; "
            "fix: set inputs.dataset to one curate step's output (e.g. curate.dataset)"
        )
    return art


def _explain_failure(error: Exception, config: PretrainConfig, ctx: Context) -> Exception:
    """The failure, with what to do (a worker's own user-facing error is raised as it is)."""
    return RuntimeError(
        f"pretrain: training failed after {config.max_failures} restart(s): {error}\n"
        f"checkpoints are kept in {ctx.checkpoint_dir}; re-running the step resumes from the "
        "latest one"
    )


def _export_checkpoints(
    result: Any, model_config: Any, data: DatasetInfo, out: Path, ctx: Context
) -> list[dict[str, Any]]:
    """Export every checkpoint Ray Train kept as a loadable Hugging Face directory under
    `out/checkpoints/step-NNNNNNN/` (weights only: what a release publishes, as OLMo publishes
    its intermediate revisions) with its data-order record (`data_order.py`), and index them:
    [{step, tokens_seen, path, ray_checkpoint}].

    `ray_checkpoint` (relative to ctx.checkpoint_dir, which is not part of the artifact) is the
    full training state, optimizer included, that a resumed run restarts from.
    """
    root = os.path.realpath(ctx.checkpoint_dir)
    rows = []
    for checkpoint, metrics in result.best_checkpoints or []:
        step = int(metrics["step"])
        rel = f"checkpoints/step-{step:07d}"
        with checkpoint.as_directory() as d:
            export_model(Path(d), model_config, out / rel, ctx.checkpoint_dir)
            data_order.export(Path(d), data.root, data.seq_len, out / rel)
        rows.append(
            {
                "step": step,
                "tokens_seen": int(metrics["tokens_seen"]),
                "path": rel,
                "ray_checkpoint": os.path.relpath(os.path.realpath(checkpoint.path), root),
            }
        )
    return sorted(rows, key=lambda r: r["step"])


def measured(metric: str) -> bool:
    """A wall-clock measurement (throughput, MFU) rather than something the training computed."""
    return "_per_s" in metric or metric.endswith("/mfu")
