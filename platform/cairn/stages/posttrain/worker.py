"""The loop Ray Train runs on every worker: build the TRL trainer, train, hand back the model.

Ray Train starts the worker group and its process group (gloo on CPU, NCCL on GPU) and sets
RANK/WORLD_SIZE/MASTER_ADDR; transformers' Trainer (through accelerate) joins that group and
runs DDP itself. `prepare_trainer` is Ray's hook for Ray Data inputs (a no-op for our in-memory
dataset, kept so that feeding Ray Data later needs no other change).

Reporting: `Relay`, a TrainerCallback, sends every logged row from rank 0 through `ctx` (metrics,
progress) and checks every few steps whether the step was cancelled (one all-reduce, so every rank
stops at the same step). Checkpoints: with `checkpoint_every`, Ray's `RayTrainReportCallback`
reports transformers' checkpoint to Ray Train, and a restarted worker group resumes from it.
The last report carries the exported model (weights, config, tokenizer with its chat template;
with LoRA the merged model and the adapter beside it) and the metric history; the driver copies
it into the output artifacts.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch
import torch.distributed as dist
from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
from transformers import TrainerCallback

from cairn.stage.usage import Meter
from cairn.stages.posttrain import lora
from cairn.stages.posttrain.final import ADAPTER_DIR, FINAL_CHECKPOINT, MODEL_DIR, STATE_FILE
from cairn.stages.posttrain.trainers import build_trainer

# How often (in steps) rank 0 asks the engine whether the step was cancelled, at the latest.
CANCEL_CHECK_EVERY = 10
# Metrics shown in the progress line, when the trainer logs them (rlvr's reward, dpo's reward
# margin/accuracy).
PROGRESS_KEYS = (
    ("loss", "loss", 3),
    ("reward", "reward", 3),
    ("rewards/margins", "margin", 2),
    ("rewards/accuracies", "acc", 2),
)


class Relay(TrainerCallback):
    """Forwards the trainer's logs to `ctx` from rank 0 and handles cancellation.

    The metric history itself is the trainer's `state.log_history`: a resumed run restores it
    from the checkpoint, so the output's history has no gap where a worker group restarted.
    """

    def __init__(self, ctx: Any, rank: int, distributed: bool) -> None:
        self.ctx = ctx
        self.rank = rank
        self.distributed = distributed
        self.cancelled = False
        self.fail_at_step: int | None = None  # test hook, see driver.train

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        if self.rank != 0 or "train_runtime" in logs:  # the summary, logged once at the end
            return
        step = state.global_step
        self.ctx.log_metrics({f"train/{k}": v for k, v in logs.items()}, step=step)
        shown = [f"{label} {logs[k]:.{digits}f}" for k, label, digits in PROGRESS_KEYS if k in logs]
        self.ctx.progress(step, state.max_steps, "  ".join(shown))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.fail_at_step is not None and state.global_step == self.fail_at_step:
            raise RuntimeError(f"injected failure at step {state.global_step} (test hook)")
        if state.global_step % CANCEL_CHECK_EVERY:
            return
        flag = torch.tensor([1.0 if self.rank == 0 and self.ctx.cancelled() else 0.0])
        if self.distributed:
            dist.all_reduce(flag)
        if flag.item() > 0:
            self.cancelled = True
            control.should_training_stop = True


def train_loop(args: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`; `args` is built by `driver.train`."""
    ctx = args["ctx"]
    config = args["config"]
    train_ctx = ray.train.get_context()
    rank, world = train_ctx.get_world_rank(), train_ctx.get_world_size()
    meter = Meter("worker", args["cpus_per_worker"], args.get("gpus_per_worker", 0.0), rank)
    torch.set_num_threads(max(1, int(args["cpus_per_worker"])))
    distributed = world > 1 and dist.is_available() and dist.is_initialized()

    relay = Relay(ctx, rank, distributed)
    recipe = args["recipe"]
    # Before Ray's report callback: a recorder saves into each checkpoint before it is reported.
    recorders = recipe.recorders(config, rank)
    callbacks: list[TrainerCallback] = [relay, *recorders]
    if config.checkpoint_every:
        callbacks.append(RayTrainReportCallback())
    # Each worker writes transformers' checkpoint parts (rank 0: weights, optimizer; every rank:
    # its RNG state) to a private directory; Ray Train merges what the workers report.
    scratch = Path(args["scratch_dir"])  # may not exist on another node: then the system's tmp
    with tempfile.TemporaryDirectory(
        prefix="hf-", dir=scratch if scratch.is_dir() else None
    ) as output_dir:
        trainer = build_trainer(
            recipe,
            config,
            Path(args["model_dir"]),
            args["chat_template"],
            args["examples"],
            Path(output_dir),
            world_size=world,
            use_cpu=args["use_cpu"],
            callbacks=callbacks,
        )
        trainer = prepare_trainer(trainer)
        for recorder in recorders:
            recorder.attach(trainer)
        if rank == 0:
            steps = f"{config.max_steps} steps" if config.max_steps else f"{config.epochs:g} epochs"
            ctx.log(
                f"{recipe.kind}: {world} worker(s) ready; {len(args['examples'])} rows, "
                f"training for {steps} of {config.global_batch_size} rows a step"
            )
            if config.lora is not None:
                _log_lora(ctx, recipe.kind, config.lora, trainer.model)
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            relay.fail_at_step = args.get("fail_at_step")
            trainer.train()
        else:
            with checkpoint.as_directory() as d:
                resume = Path(d) / RayTrainReportCallback.CHECKPOINT_NAME
                if not (resume / "trainer_state.json").is_file():
                    raise RuntimeError(f"{checkpoint.path} holds no transformers checkpoint")
                if rank == 0:
                    step = json.loads((resume / "trainer_state.json").read_text())["global_step"]
                    ctx.log(f"{recipe.kind}: resuming from step {step} ({checkpoint.path})")
                for recorder in recorders:
                    recorder.resume(resume)
                trainer.train(resume_from_checkpoint=str(resume))
        # A cancelled run reports nothing more: its latest checkpoint stays the one to resume.
        if not relay.cancelled:
            _report_final(trainer, rank, config.lora is not None, recorders)
    ctx.usage(meter.stop())
    ctx.flush(wait=True)  # before Ray Train tears this worker down


def _log_lora(ctx: Any, kind: str, settings: Any, model: Any) -> None:
    """How much of the model LoRA trains, in the step's log and as metrics (MLflow)."""
    trained, total = lora.trainable(model)
    ctx.log(
        f"{kind}: LoRA {lora.describe(settings)}: {trained:,} of {total:,} parameters train "
        f"({100 * trained / total:.2f}%)"
    )
    ctx.log_metrics(
        {"lora/trainable_parameters": float(trained), "lora/total_parameters": float(total)},
        step=0,
    )


def _report_final(trainer: Any, rank: int, with_lora: bool, recorders: list[Any]) -> None:
    """All ranks report (a barrier); rank 0 attaches the exported model (and adapter), what the
    recipe's recorders hold (rlvr's rollouts) and the history."""
    state = trainer.state
    metrics = {"step": state.global_step, "final": 1}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=FINAL_CHECKPOINT)
        return
    with tempfile.TemporaryDirectory(prefix="cairn-posttrain-") as tmp:
        counts = None
        if with_lora:
            trained, total = lora.trainable(trainer.accelerator.unwrap_model(trainer.model))
            counts = {"trainable_parameters": trained, "total_parameters": total}
        export(trainer, Path(tmp) / MODEL_DIR, Path(tmp) / ADAPTER_DIR if with_lora else None)
        for recorder in recorders:  # beside the model: the driver copies the folder whole
            recorder.export(Path(tmp) / MODEL_DIR)
        # "step" first in each row, as pretrain writes its history.
        history = [{"step": r["step"], **r} for r in state.log_history]
        final_state = {
            "step": state.global_step,
            "max_steps": state.max_steps,
            "history": [r for r in history if "train_runtime" not in r],
            "summary": next((r for r in history if "train_runtime" in r), {}),
            "lora": counts,
        }
        (Path(tmp) / STATE_FILE).write_text(json.dumps(final_state))
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=FINAL_CHECKPOINT,
        )


def export(trainer: Any, out: Path, adapter_out: Path | None = None) -> None:
    """The trained model as a plain Hugging Face directory: config.json, generation_config.json,
    model.safetensors and the tokenizer with its chat template. Not `trainer.save_model`, which
    adds training_args.bin (a pickle of the trainer's arguments) to the directory.
    With `adapter_out` (a LoRA run) the adapter is saved there, and `out` gets the input model
    with the adapter merged in (`lora.save`)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if adapter_out is not None:
        model = lora.save(model, adapter_out)
    # Trainer turns the KV cache off for training; generation (serve, evaluate) wants it on.
    model.config.use_cache = True
    model.save_pretrained(out)
    trainer.processing_class.save_pretrained(out)
