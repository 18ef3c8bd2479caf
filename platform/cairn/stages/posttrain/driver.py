"""The driver side of sft and dpo: check the inputs, launch Ray Train, write the output artifact.

`run` executes this in a zero-CPU Ray task (launcher "trainer"); the workers it starts (through
`cairn.stage.raytrain`, which pretrain uses too) hold the step's CPUs/GPUs. Everything that can be wrong with the inputs (model directory, tokenizer, chat
template, every data row, lengths, batch size) is checked here first, so a mistake is a
`StageError` naming file, line and field within seconds, not a failed worker group.

Ray Train's storage is `ctx.checkpoint_dir` (kept by the engine per step fingerprint): resumable
checkpoints, if `checkpoint_every` asks for them, and the final report with the exported model.
A re-run after a failure during export reuses that final report instead of training again.
With `lora`, the report holds the adapter too: it becomes the `adapter` output, and the merged
model the `model` output (`lora.py`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from cairn.errors import StageError, StepCancelled
from cairn.stage import Context, InputArtifact, Inputs, Outputs, Resources, raytrain
from cairn.stage.files import content_digest, hash_tree
from cairn.stage.plots import plot_losses
from cairn.stages.posttrain import lora
from cairn.stages.posttrain.chat import DataStats, inspect_model, measure
from cairn.stages.posttrain.config import PosttrainConfig
from cairn.stages.posttrain.data import read_examples
from cairn.stages.posttrain.final import ADAPTER_DIR, MODEL_DIR, STATE_FILE
from cairn.stages.posttrain.recipe import Recipe

# How many offending rows a log line lists before saying "and N more".
SHOW_ROWS = 5


def train(
    recipe: Recipe,
    config: PosttrainConfig,
    inputs: Inputs,
    ctx: Context,
    *,
    fail_at_step: int | None = None,
) -> Outputs:
    """Check the inputs, fine-tune with Ray Train, and write the `model` output.

    `fail_at_step` is a test hook: every worker raises once at that step unless it resumed from
    a checkpoint, which is how the tests exercise restarts."""
    started = time.monotonic()
    kind = recipe.kind
    model_in, data_in = _input(inputs, "model", kind), _input(inputs, "data", kind)
    info, tok = inspect_model(model_in.path, recipe, model_in.name or str(model_in.path))
    if info.context_length is not None and config.max_length > info.context_length:
        raise StageError(
            f"{kind}: config.max_length ({config.max_length}) exceeds the model's context length "
            f"({info.context_length}, max_position_embeddings in {info.path / 'config.json'}); "
            f"fix: set max_length to at most {info.context_length}"
        )
    examples = read_examples(data_in, recipe, reserved=info.special_tokens)
    stats = measure(examples, tok, recipe, config.max_length)
    _check_lengths(kind, config, stats, ctx)
    recipe.check(examples, config, tok)
    _check_batch(kind, config, ctx.resources)
    if config.lora is not None:
        lora.check_targets(info.path, config.lora, kind)
    if not info.own_template:
        ctx.log(f"{kind}: the input tokenizer has no chat template; training with Cairn's")

    result = raytrain.finished(ctx, lambda r: _final_state(r) is not None)
    if result is not None:
        ctx.log(f"{kind}: training already finished in an earlier attempt; exporting its result")
    else:
        loop_config = {
            "recipe": recipe,
            "config": config,
            "model_dir": str(info.path),
            "chat_template": info.chat_template,
            "examples": [e.fields for e in examples],
            "fail_at_step": fail_at_step,
            "use_cpu": ctx.resources.gpus_per_worker == 0,
            "scratch_dir": str(ctx.scratch_dir),
        }
        result = raytrain.fit(
            ctx,
            _train_loop,
            loop_config,
            config,
            explain=lambda e: _explain_failure(e, kind, config, ctx),
        )

    state = _final_state(result)
    if state is None:
        if ctx.cancelled():
            raise StepCancelled(
                f"{kind}: step '{ctx.step}' was cancelled; a re-run resumes from its last "
                "checkpoint, if checkpoint_every saved one"
            )
        raise RuntimeError(f"{kind}: Ray Train finished without the final model ({result.path})")
    out = ctx.output_path("model")
    assert result.checkpoint is not None  # _final_state read it
    with result.checkpoint.as_directory() as d:
        for f in sorted((Path(d) / MODEL_DIR).iterdir()):
            shutil.copy2(f, out / f.name)
        if config.lora is not None:
            adapter = ctx.output_path("adapter")
            for f in sorted((Path(d) / ADAPTER_DIR).iterdir()):
                shutil.copy2(f, adapter / f.name)
    history = [_finite(row) for row in state["history"]]
    (out / "training_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    parameters = _parameters(out)
    plot_losses(history, out / "loss.png", f"{ctx.step} ({kind}): {parameters:,} parameters")
    ctx.log(
        f"{kind}: wrote the model after {state['step']} steps in {time.monotonic() - started:.0f} s"
    )
    architecture = (json.loads((out / "config.json").read_text()).get("architectures") or [None])[0]
    outputs = {"model": _metadata(recipe, state, history, stats, parameters, architecture)}
    if config.lora is not None:
        # The adapter's content digest, as the store will address it: the merged model names
        # the adapter merged into it.
        digest = content_digest(hash_tree(ctx.output_path("adapter")))
        base = {"digest": model_in.digest, "name": model_in.name}
        merged, outputs["adapter"] = lora.metadata(config.lora, state["lora"], base, digest)
        outputs["model"].update(merged)
        ctx.log(f"{kind}: merged adapter {digest[:12]} into the base {model_in.digest[:12]}")
    return outputs


def _input(inputs: Inputs, slot: str, kind: str) -> InputArtifact:
    art = inputs.get(slot)
    if not isinstance(art, InputArtifact):
        what = "a model directory (e.g. pretrain.model)" if slot == "model" else "a .jsonl path"
        raise StageError(
            f"{kind}: input '{slot}' must be exactly one artifact; fix: set inputs.{slot} to {what}"
        )
    return art


def _check_lengths(kind: str, config: PosttrainConfig, stats: DataStats, ctx: Context) -> None:
    """Rows that max_length cuts are trained on their start; rows it empties are skipped."""
    if len(stats.dropped) == stats.rows:
        raise StageError(
            f"{kind}: every row's prompt is at least max_length ({config.max_length}) tokens "
            f"long (first: {stats.dropped[0]}), so nothing would be trained; fix: raise "
            "config.max_length (up to the model's context length) or shorten the prompts"
        )
    for origins, what in (
        (stats.dropped, "have a prompt of max_length tokens or more and are skipped"),
        (stats.truncated, "are longer than max_length and are cut at the end"),
    ):
        if origins:
            shown = ", ".join(origins[:SHOW_ROWS])
            more = f" and {len(origins) - SHOW_ROWS} more" if len(origins) > SHOW_ROWS else ""
            ctx.log(f"{kind}: {len(origins)} of {stats.rows} rows {what} ({shown}{more})")


def _check_batch(kind: str, config: PosttrainConfig, res: Resources) -> None:
    if config.global_batch_size % res.num_workers:
        lower = config.global_batch_size // res.num_workers * res.num_workers
        raise StageError(
            f"{kind}: config.global_batch_size ({config.global_batch_size}) must be divisible by "
            f"resources.num_workers ({res.num_workers}); fix: set global_batch_size to "
            f"{max(lower, res.num_workers)} or {lower + res.num_workers}, or change num_workers"
        )


def _train_loop(args: dict[str, Any]) -> None:
    """What Ray Train runs on each worker. The worker module (TRL, datasets) is imported there,
    not here: the driver never trains and saves seconds of imports before its checks."""
    from cairn.stages.posttrain.worker import train_loop

    train_loop(args)


def _final_state(result: Any) -> dict[str, Any] | None:
    """The run state saved with the final model, if the run's latest checkpoint is that final
    report (and not a resumable checkpoint, or nothing, as after a cancel)."""
    if result.checkpoint is None:
        return None
    with result.checkpoint.as_directory() as d:
        path = Path(d) / STATE_FILE
        if not path.is_file():
            return None
        state: dict[str, Any] = json.loads(path.read_text())
        return state


def _explain_failure(
    error: Exception, kind: str, config: PosttrainConfig, ctx: Context
) -> Exception:
    """The failure, with what to do (a worker's own user-facing error is raised as it is)."""
    resume = (
        "re-running the step resumes from the latest checkpoint"
        if config.checkpoint_every
        else "re-running the step starts over (set checkpoint_every to resume instead)"
    )
    return RuntimeError(
        f"{kind}: training failed after {config.max_failures} restart(s): {error}\n"
        f"checkpoints are kept in {ctx.checkpoint_dir}; {resume}"
    )


def _parameters(model_dir: Path) -> int:
    """Parameters in the saved weights, read from the safetensors header (no tensors loaded)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as st:
            for name in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                total += math.prod(st.get_slice(name).get_shape())
    return total


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """A NaN or infinite loss is kept as null: JSON has no NaN."""
    return {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in row.items()}


def _metadata(
    recipe: Recipe,
    state: dict[str, Any],
    history: list[dict[str, Any]],
    stats: DataStats,
    parameters: int,
    architecture: str | None,
) -> dict[str, Any]:
    last: dict[str, Any] = next((r for r in reversed(history) if r.get("loss") is not None), {})
    summary = state.get("summary") or {}
    meta: dict[str, Any] = {
        "architecture": architecture,
        "steps": state["step"],
        "final_loss": last.get("loss"),
        "examples": stats.rows - len(stats.dropped),
        "tokens": stats.tokens,
        "tokens_seen": int(last["num_tokens"]) if last.get("num_tokens") else None,
        "parameters": parameters,
        "train_runtime_s": summary.get("train_runtime"),
    }
    meta.update(recipe.metadata(last))
    return meta
