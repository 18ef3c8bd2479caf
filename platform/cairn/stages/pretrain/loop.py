"""The per-worker training loop that Ray Train runs on every rank.

Everything a resumed run needs lives in its Ray Train checkpoint (weights, optimizer, LR
schedule, step, RNG states and the metric history), and the data order is a function of the step
(`data.BatchOrder`), so resuming from step N produces the same weights as never stopping.

`ray.train.report()` is a barrier across ranks and costs ~0.2 s even with a short health-check
interval, so it is called only together with a checkpoint. Metrics go from rank 0 straight to the
engine through `ctx` (batched), and the few collectives the loop needs (loss average, cancel flag,
validation loss) are plain `torch.distributed` calls.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cairn.errors import StageError
from cairn.stage.usage import Meter
from cairn.stages.pretrain import data_order, parallel, rng
from cairn.stages.pretrain.data import BatchOrder, DatasetInfo, Sequences
from cairn.stages.pretrain.flops import device_peak, flops_per_token, mfu
from cairn.stages.pretrain.model import MODEL_STATE_FILE, build_model, load_tensors

STATE_FILE = "state.json"
# The AdamW state, unsharded, keyed by parameter name: what every checkpoint holds, so that
# DDP, FSDP2 and any group size read each other's (parallel.full_state).
OPTIM_BY_NAME = "optimizer_by_name.pt"
SCHEDULER = "scheduler.pt"
METRICS_FILE = "metrics.jsonl"
# How often (in steps) rank 0 asks the engine whether the step was cancelled, at the latest.
CANCEL_CHECK_EVERY = 10


def checkpoint_dir_name(step: int) -> str:
    return f"step-{step:08d}"


@dataclass
class TrainState:
    """Progress that is saved in every checkpoint (besides tensors)."""

    step: int = 0
    tokens_seen: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier after `step` optimizer steps: linear warmup, then cosine down to min_lr."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def uses_fsdp(sharding: str, device: torch.device) -> bool:
    """Whether a group of several workers shards the model (FSDP2): `fsdp`, or `auto` on GPUs."""
    return sharding == "fsdp" or (sharding == "auto" and device.type == "cuda")


def train_loop(args: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`. `args` is built by `cairn.stages.pretrain.run`."""
    cfg = args["config"]
    data: DatasetInfo = args["dataset"]
    ctx = args["ctx"]
    fail_at_step: int | None = args.get("fail_at_step")

    train_ctx = ray.train.get_context()
    rank, world = train_ctx.get_world_rank(), train_ctx.get_world_size()
    meter = Meter("worker", args["cpus_per_worker"], args.get("gpus_per_worker", 0.0), rank)
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    torch.set_num_threads(int(max(1, args["cpus_per_worker"])))
    device = ray.train.torch.get_device()
    autocast: Any = contextlib.nullcontext()
    if device.type == "cuda" and cfg.dtype == "bfloat16":
        autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16)

    # FSDP2 shards weights, grads and optimizer state (parallel.py); DDP keeps a copy per worker.
    # One worker never shards (on an H100, FSDP2 over one rank cost 2.4% a step, bench/).
    # Checkpoints have one layout either way, so an elastic group that grows from one worker to
    # several resumes the other's checkpoints.
    sharded = distributed and uses_fsdp(cfg.sharding, device)
    if sharded:
        fresh: torch.nn.Module = build_model(args["llama_config"], cfg.seed)
        model = parallel.shard(fresh.to(device))
    else:
        model = ray.train.torch.prepare_model(build_model(args["llama_config"], cfg.seed))
    raw: torch.nn.Module = model.module if isinstance(model, DistributedDataParallel) else model
    if rank == 0 and sharded:
        ctx.log(f"pretrain: FSDP2 across {world} workers (each holds 1/{world} of the state)")
    optimizer = _optimizer(raw, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio),
    )
    state = TrainState()
    resumed = False
    # Rank 0's record of every global batch stepped on (see data_order); saved with checkpoints.
    batches: list[np.ndarray] = []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = _load_checkpoint(
                Path(d), raw, optimizer, scheduler, sharded, ctx.checkpoint_dir
            )
            batches = data_order.load(Path(d))[: state.step] if rank == 0 else []
        resumed = True
        if rank == 0:
            ctx.log(f"pretrain: resumed from step {state.step} ({checkpoint.path})")

    train = Sequences(data.train_shards)
    val = Sequences(data.validation_shards)
    order = BatchOrder(len(train), cfg.global_batch_size, cfg.seed)
    pad = data.pad_token_id if data.pad_token_id not in (None, data.eos_token_id) else None
    tokens_per_step = cfg.global_batch_size * data.seq_len
    # Model FLOPs per token (flops.py) and, on a known GPU, its datasheet peak: for MFU.
    per_token = flops_per_token(args["llama_config"], data.seq_len)
    peak = (
        device_peak(torch.cuda.get_device_name(device), cfg.dtype)
        if device.type == "cuda"
        else None
    )
    if rank == 0 and peak is not None and not resumed:
        ctx.log(f"pretrain: MFU against {peak[0] / 1e12:.0f} TFLOP/s ({peak[1]})")

    # Throughput is wall time over train steps only: the clock stops for validation and
    # checkpoints. On a GPU the host runs ahead of the device, so the clock is read only where
    # the device has caught up (loss.item() at a log step, a synchronize before untimed work).
    window = _Window(device)
    stop = False
    while state.step < cfg.max_steps and not stop:
        if rank == 0:
            batches.append(order.global_batch_at(state.step).copy())
        share = torch.from_numpy(train.take(order.rank_batch_at(state.step, rank, world)))
        model.train()
        if cfg.micro_batch_size is None or cfg.micro_batch_size >= len(share):
            ids = share.to(device)
            labels = ids if pad is None else ids.masked_fill(ids == pad, -100)
            with autocast:
                loss = model(input_ids=ids, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        else:
            loss = _accumulate(
                model, optimizer, share, cfg.micro_batch_size, pad, device, autocast, sharded
            )
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        state.step += 1
        state.tokens_seen += tokens_per_step
        window.steps += 1
        step = state.step

        if fail_at_step is not None and not resumed and step == fail_at_step:
            raise RuntimeError(f"pretrain: injected failure at step {step} (test hook)")

        last = step == cfg.max_steps
        if last or step % cfg.log_every == 0 or step % CANCEL_CHECK_EVERY == 0:
            # One collective for both: the rank-averaged loss and whether rank 0 saw a cancel.
            cancel = 1.0 if rank == 0 and ctx.cancelled() else 0.0
            sync = torch.tensor([loss.item(), float(grad_norm), cancel], dtype=torch.float64)
            if distributed:
                sync = _all_reduce(sync, device)
            state.train_loss = float(sync[0]) / world
            stop = bool(sync[2] > 0) and not last
            if last or step % cfg.log_every == 0:
                tokens_per_s = window.steps * tokens_per_step / window.read()
                row = {
                    "train/loss": state.train_loss,
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/grad_norm": float(sync[1]) / world,
                    "train/tokens_per_s": tokens_per_s,
                    "train/tokens_per_s_per_worker": tokens_per_s / world,
                    "train/tflops_per_s_per_worker": tokens_per_s / world * per_token / 1e12,
                    "train/tokens_seen": float(state.tokens_seen),
                }
                if peak is not None:
                    row["train/mfu"] = mfu(tokens_per_s / world, per_token, peak[0])
                _log(ctx, state, rank, row, step)
                if rank == 0:
                    ctx.progress(step, cfg.max_steps, f"loss {state.train_loss:.3f}")
                if meter.due():
                    ctx.usage(meter.snapshot())
                window.restart()

        evaluate = last or bool(cfg.eval_every and step % cfg.eval_every == 0)
        checkpoint_now = last or stop or step % cfg.checkpoint_every == 0
        if evaluate or checkpoint_now:
            window.pause()
        if evaluate:
            val_loss = _evaluate(raw, val, cfg, rank, world, device, autocast, pad, distributed)
            if val_loss is not None:
                state.val_loss = val_loss
                _log(ctx, state, rank, {"val/loss": val_loss}, step)

        if checkpoint_now:
            _save_checkpoint(state, rank, raw, optimizer, scheduler, batches)
            ctx.usage(meter.snapshot())
        if evaluate or checkpoint_now:
            window.resume()

    if rank == 0 and stop:
        ctx.log(f"pretrain: cancelled at step {state.step}; checkpoint saved")
    ctx.usage(meter.stop())
    ctx.flush(wait=True)  # before Ray Train tears this worker down


class _Window:
    """Wall time over the train steps since the last log record, stopped for untimed work."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.steps = 0
        self.elapsed = 0.0
        self.since: float | None = time.perf_counter()

    def _caught_up(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def pause(self) -> None:
        if self.since is not None:
            self._caught_up()
            self.elapsed += time.perf_counter() - self.since
            self.since = None

    def resume(self) -> None:
        self.since = time.perf_counter()

    def read(self) -> float:
        """Seconds timed so far; call once the device has caught up (after loss.item())."""
        running = 0.0 if self.since is None else time.perf_counter() - self.since
        return max(self.elapsed + running, 1e-9)

    def restart(self) -> None:
        self.steps, self.elapsed, self.since = 0, 0.0, time.perf_counter()


def _accumulate(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    share: torch.Tensor,
    micro: int,
    pad: int | None,
    device: torch.device,
    autocast: Any,
    sharded: bool,
) -> torch.Tensor:
    """This worker's share of the step in micro-batches of `micro` sequences: gradients add up
    (each micro-batch's loss weighted by its share of the sequences), and they are reduced across
    workers only after the last one. Returns the share's mean loss."""
    chunks = share.split(micro)
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for i, chunk in enumerate(chunks):
        ids = chunk.to(device)
        labels = ids if pad is None else ids.masked_fill(ids == pad, -100)
        sync = i == len(chunks) - 1
        with _gradient_sync(model, sharded, sync):
            with autocast:
                loss = model(input_ids=ids, labels=labels).loss * (len(chunk) / len(share))
            loss.backward()
        total += loss.detach().float()
    return total


@contextlib.contextmanager
def _gradient_sync(model: torch.nn.Module, sharded: bool, sync: bool) -> Any:
    """Skip the cross-worker gradient reduction (DDP no_sync / FSDP2) unless `sync`."""
    if sync:
        yield
    elif sharded:
        model.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)  # type: ignore[operator]
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield


def _optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.Optimizer:
    # Decay matrices (including the tied embedding), not norms or biases.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
    )


def _log(ctx: Any, state: TrainState, rank: int, row: dict[str, float], step: int) -> None:
    """Rank 0 sends `row` to the engine and keeps it for the checkpoint's metric history."""
    if rank != 0:
        return
    ctx.log_metrics(row, step=step)
    state.history.append({"step": step, **row})


@torch.no_grad()
def _evaluate(
    model: torch.nn.Module,
    val: Sequences,
    cfg: Any,
    rank: int,
    world: int,
    device: torch.device,
    autocast: Any,
    pad: int | None,
    distributed: bool,
) -> float | None:
    """Mean loss over the first `eval_batches` global batches of validation, split over ranks.

    Every rank runs the same number of forwards (a sharded model gathers its weights in each, a
    collective), in micro-batches when `micro_batch_size` is set (a whole share of a large
    global batch would not fit where training needed micro-batches)."""
    n = min(len(val), cfg.eval_batches * cfg.global_batch_size)
    n -= n % world
    if n == 0:
        return None
    model.eval()
    mine = np.arange(rank, n, world)
    per_rank = max(1, cfg.global_batch_size // world)
    if cfg.micro_batch_size is not None:
        per_rank = min(per_rank, cfg.micro_batch_size)
    totals = torch.zeros(2, dtype=torch.float64)
    for i in range(0, len(mine), per_rank):
        ids = torch.from_numpy(val.take(mine[i : i + per_rank])).to(device)
        labels = ids if pad is None else ids.masked_fill(ids == pad, -100)
        with autocast:
            loss = model(input_ids=ids, labels=labels).loss
        totals += torch.tensor([loss.item() * len(ids), len(ids)], dtype=torch.float64)
    if distributed:
        totals = _all_reduce(totals, device)
    return float(totals[0] / totals[1])


def _all_reduce(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum a small CPU tensor over ranks. NCCL (Ray Train's backend on GPUs) reduces only
    device tensors, so it travels through `device` there."""
    on = t.to(device)
    dist.all_reduce(on)
    return on.cpu()


def _save_checkpoint(
    state: TrainState,
    rank: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batches: list[np.ndarray],
) -> None:
    """All ranks report (it is a barrier); only rank 0 writes and passes a checkpoint.

    The weights and the optimizer state are always written whole and keyed by parameter name
    (a sharded model's are gathered first, by all ranks), so a checkpoint is the same files
    whatever wrote it: any group size and sharding resumes it, `export_model` reads it as is."""
    metrics: dict[str, float] = {"step": state.step, "tokens_seen": state.tokens_seen}
    if state.train_loss is not None:
        metrics["train_loss"] = state.train_loss
    if state.val_loss is not None:
        metrics["val_loss"] = state.val_loss
    name = checkpoint_dir_name(state.step)
    # Sharded, a collective: every rank gathers, rank 0 receives the tensors.
    weights, optim = parallel.full_state(model, optimizer)
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    with tempfile.TemporaryDirectory(prefix="cairn-pretrain-") as tmp:
        d = Path(tmp)
        torch.save(weights, d / MODEL_STATE_FILE)
        torch.save(optim, d / OPTIM_BY_NAME)
        torch.save(scheduler.state_dict(), d / SCHEDULER)
        rng.save(d)
        data_order.save(batches, d)
        fields = asdict(state)
        history = fields.pop("history")
        (d / STATE_FILE).write_text(json.dumps(fields, indent=2))
        (d / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in history))
        ray.train.report(
            metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name
        )


def _load_checkpoint(
    d: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sharded: bool,
    start_over: Path,
) -> TrainState:
    """Restore a checkpoint into the model, optimizer, schedule and random generators.

    Every file is read without running code from it: tensors through torch's restricted
    unpickler (`load_tensors`), the random-number state as JSON (rng.py). The RNG state is read
    first, so a checkpoint that cannot resume bit for bit is refused before anything is loaded;
    that includes every checkpoint older than rng.json (those kept the optimizer state by
    position, in optimizer.pt, which is therefore no longer read).
    """
    rng.read(d, start_over)
    weights = load_tensors(d / MODEL_STATE_FILE, "cpu", start_over)
    optim = load_tensors(d / OPTIM_BY_NAME, "cpu", start_over)
    parallel.load_full_state(model, optimizer, weights, optim, sharded=sharded)
    scheduler.load_state_dict(load_tensors(d / SCHEDULER, "cpu", start_over))
    rng.restore(d, start_over)
    return read_state(d)


def read_state(d: Path) -> TrainState:
    """The `TrainState` saved in checkpoint directory `d` (used by the driver after fit, too)."""
    path = Path(d) / STATE_FILE
    try:
        state = TrainState(**json.loads(path.read_text()))
        path = Path(d) / METRICS_FILE
        lines = path.read_text().splitlines() if path.exists() else []
        state.history = [json.loads(line) for line in lines if line]
        return state
    except (OSError, ValueError, TypeError) as e:  # missing, not JSON, or not these fields
        raise StageError(
            f"pretrain: checkpoint file {path} cannot be read ({e}); fix: restore the checkpoint "
            "folder from a copy, or delete the step's checkpoints and re-run the step to train "
            "it from step 0"
        ) from e
