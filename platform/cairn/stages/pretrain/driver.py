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

import ray
import ray.train
from ray.train.torch import TorchTrainer
from transformers import AutoTokenizer

from cairn.errors import StageError, StepCancelled
from cairn.plots import plot_losses
from cairn.stages.base import Context, InputArtifact, Inputs, Outputs
from cairn.stages.pretrain import PretrainConfig, data_order
from cairn.stages.pretrain.data import DatasetInfo, check_batch, inspect_dataset
from cairn.stages.pretrain.loop import read_state, train_loop
from cairn.stages.pretrain.model import ARCHITECTURE, count_parameters, export_model, llama_config
from cairn.stages.raytrain import RUN_NAME, run_config, scaling, worker_context, worker_error


def train(
    config: PretrainConfig, inputs: Inputs, ctx: Context, *, fail_at_step: int | None = None
) -> Outputs:
    """Pretrain and export. `fail_at_step` is a test hook: every worker raises once at that step
    unless it resumed from a checkpoint, which is how the tests exercise crash recovery."""
    if not ray.is_initialized():
        raise RuntimeError(
            "pretrain needs a running Ray (the engine initialises it); call ray.init() first"
        )
    data = inspect_dataset(_dataset_input(inputs).path)
    res = ctx.resources
    check_batch(config, data, res)
    model_config = llama_config(config, data)
    if config.dtype == "bfloat16" and res.gpus_per_worker == 0:
        ctx.log("pretrain: dtype bfloat16 applies on CUDA only; these CPU workers use float32")

    result = _finished_run(config, ctx)
    if result is not None:
        ctx.log("pretrain: training already finished in an earlier attempt; exporting its result")
    else:
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
        model = export_model(Path(ckpt_dir), model_config, out)
        data_order.export(Path(ckpt_dir), data.root, data.seq_len, out)
    AutoTokenizer.from_pretrained(data.tokenizer_dir).save_pretrained(out)
    (out / "training_metrics.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in state.history)
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
    """Run the Ray Train job; with the same RunConfig(name, storage_path) as an earlier attempt,
    Ray Train hands the workers that attempt's latest checkpoint (`ray.train.get_checkpoint`)."""
    res = ctx.resources
    with worker_context(ctx) as worker_ctx:
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={
                "config": config,
                "dataset": data,
                "llama_config": model_config,
                "ctx": worker_ctx,
                "cpus_per_worker": res.cpus_per_worker,
                "gpus_per_worker": res.gpus_per_worker,
                "fail_at_step": fail_at_step,
            },
            scaling_config=scaling(res),
            run_config=run_config(
                ctx.checkpoint_dir, config.max_failures, config.keep_checkpoints, worker_ctx
            ),
        )
        try:
            return trainer.fit()
        except ray.train.TrainingFailedError as e:
            raise _explain_failure(e, config, ctx) from e


def _finished_run(config: PretrainConfig, ctx: Context) -> ray.train.Result | None:
    """The result of an earlier attempt that already trained to max_steps, if there is one.

    Happens when a step is re-run after failing during export: reading Ray Train's checkpoint
    index saves starting a worker group (~15 s here) only to find there is nothing to do.
    """
    run_dir = Path(ctx.checkpoint_dir) / RUN_NAME
    if not run_dir.is_dir():
        return None
    try:
        result = ray.train.Result.from_path(str(run_dir))
    except RuntimeError:  # no checkpoint index: the earlier attempt saved no checkpoint
        return None
    if result.checkpoint is None:
        return None
    with result.checkpoint.as_directory() as d:
        return result if read_state(Path(d)).step >= config.max_steps else None


def _dataset_input(inputs: Inputs) -> InputArtifact:
    art = inputs.get("dataset")
    if not isinstance(art, InputArtifact):
        raise StageError(
            "pretrain: input 'dataset' must be exactly one dataset artifact; "
            "fix: set inputs.dataset to one curate step's output (e.g. curate.dataset)"
        )
    return art


def _explain_failure(error: Exception, config: PretrainConfig, ctx: Context) -> Exception:
    """A worker's own user-facing error if it raised one, else the failure with what to do."""
    if (own := worker_error(error)) is not None:
        return own
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
            export_model(Path(d), model_config, out / rel)
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
