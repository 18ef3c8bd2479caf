"""Pretrain loop overhead: Cairn's pretrain stage against a bare PyTorch loop doing the same work.

Target: a Cairn pretrain step costs ≤ 1.05× a bare PyTorch step on the same model, batch and
machine. Both sides train the same model (`build_model(llama_config(...))`, same seed), on the
same batches (`Sequences` + `BatchOrder` over one dataset built here), with AdamW on the same
parameter groups, the same LambdaLR schedule and `clip_grad_norm_`, with 2 torch threads:
  - cairn: the real stage, `cairn.stages.pretrain.driver.train(config, inputs, local_context)`,
           Ray Train's TorchTrainer with 1 worker × 2 CPUs, Ray initialised in this process;
  - peer:  a plain `for` loop in a fresh process, `torch.set_num_threads(2)`, at the niceness
           Ray gives its workers (15): on a machine shared with other jobs, a peer at niceness 0
           would get the cores first and the comparison would measure the scheduler.
With `--ddp`, also 2 workers × 1 CPU against a bare 2-process gloo DDP loop.

Steady state. Cairn's loop sends a metric record every `--log-every` (k) steps, stamped in the
worker when it is made (`ts`, ms); the wall between two records over k is Cairn's time per step,
everything included (data, step, loss sync, progress and cancel checks). The peer is stamped at
the same steps. The first window (steps 1..k: warm-up) is dropped; each side's figure is the
median over the remaining windows, the ratio is per round, and the verdict is the median over
rounds. The runs alternate (peer, cairn, peer, cairn, ...) so that noise from other jobs on the
machine hits both. Checkpoint and validation happen only after the last step (checkpoint_every =
max_steps, eval_every = 0), outside the windows. Two more figures help read a noisy machine: the
ratio of each side's fastest window (the one least disturbed by other jobs), and Cairn's own
figure (`train/tokens_per_s`, what MLflow gets) as ms per step, which must agree with the
stamps. Both sides log the same losses (the peer is checked against Cairn's records: same work,
not just the same shapes).

With `--device cuda` both sides train on the GPU (bf16 autocast and micro-batches as the config
says) and the figures add tokens/s/GPU and MFU (`flops.py`); `--recipe WORKFLOW` takes the model
from a workflow's pretrain step and the shape of its data from its curate step, `--dataset` a
curated dataset directory (bench/RESULTS.md: the 1B recipe on an H100).

End-to-end wall is reported apart: for Cairn the whole `train()` call (Ray Train start-up, the
final validation and checkpoint, the Hugging Face export), for the peer its process start, model
build and loop.

The default model (hidden 128, 2 layers, 2 heads, seq 128, global batch 8: 787k parameters, of
which 262k embedding) takes ~140 ms a step on 2 idle cores of the CI-class machine; hidden 256 /
4 layers / seq 256 took ~1.4 s, too long for enough windows in a few minutes.

The dataset is built like curate's output: a byte-level BPE (`curate.tokenizer.train`) on the
Shakespeare plays in workflows/data, EOS-terminated documents packed into rows of --seq-len.

    .venv/bin/python bench/train_overhead.py [--steps 100] [--rounds 3] [--log-every 10] [--ddp]
        [--device cuda --recipe workflows/pretrain-1b-gpu.yaml --dataset DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# Ray Train V2 polls its workers every 2 s by default, which would stretch its start and end.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

DATA = Path(__file__).resolve().parents[1] / "workflows" / "data"
VAL_SEQUENCES = 64
TARGET = 1.05


# --- the dataset -------------------------------------------------------------------------------


def build_dataset(root: Path, seq_len: int, vocab_size: int) -> Path:
    """A directory laid out like the curate stage's `dataset` output (tokenizer/, train/,
    validation/, dataset.json), from the Shakespeare plays shipped in workflows/data."""
    from cairn.stages.curate import tokenizer

    texts = [json.loads(line)["text"] for line in (DATA / "shakespeare" / "plays.jsonl").open()]
    tok = tokenizer.train(texts, vocab_size)
    tokenizer.save(tok, root / "tokenizer")
    eos = tokenizer.special_id(tok, tokenizer.EOS)
    pad = tokenizer.special_id(tok, tokenizer.PAD)
    stream = np.concatenate(
        [np.asarray([*e.ids, eos], dtype=np.int32) for e in tok.encode_batch_fast(texts)]
    )
    rows = stream[: len(stream) // seq_len * seq_len].reshape(-1, seq_len)
    splits = {"train": rows[:-VAL_SEQUENCES], "validation": rows[-VAL_SEQUENCES:]}
    for split, arr in splits.items():
        (root / split).mkdir(parents=True)
        np.save(root / split / "shard-00000.npy", arr)
    meta = {
        "seq_len": seq_len,
        "vocab_size": tok.get_vocab_size(),
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "train_sequences": len(splits["train"]),
        "validation_sequences": len(splits["validation"]),
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


# --- measuring ---------------------------------------------------------------------------------


def steady_ms(steps: list[int], stamps: list[float]) -> tuple[float, float, list[float]]:
    """(median, mean) ms per step over the windows between consecutive stamps, the first window
    (from the start to the first stamp: warm-up) dropped; and each window's ms per step."""
    windows = [
        (stamps[i + 1] - stamps[i]) / (steps[i + 1] - steps[i]) for i in range(len(steps) - 1)
    ]
    mean = (stamps[-1] - stamps[0]) / (steps[-1] - steps[0])
    return statistics.median(windows), mean, windows


def peer_loop(
    cfg: Any, data: Any, threads: int, rank: int = 0, world: int = 1, device: str = "cpu"
) -> dict[str, Any]:
    """The bare loop: what Cairn's `train_loop` does per step, without Ray Train or Cairn.

    With world > 1 it is one rank of a gloo DDP group that the caller has initialised. On
    "cuda" it trains under bf16 autocast when `cfg.dtype` says so, and in micro-batches of
    `cfg.micro_batch_size` when set, as Cairn's loop does."""
    import contextlib

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from cairn.stages.pretrain.data import BatchOrder, Sequences
    from cairn.stages.pretrain.loop import lr_factor
    from cairn.stages.pretrain.model import build_model, llama_config

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    autocast: Any = contextlib.nullcontext()
    if device == "cuda" and cfg.dtype == "bfloat16":
        autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    model: torch.nn.Module = build_model(llama_config(cfg, data), cfg.seed).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
    )
    if world > 1:
        model = DistributedDataParallel(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    )
    train = Sequences(data.train_shards)
    order = BatchOrder(len(train), cfg.global_batch_size, cfg.seed)
    pad = data.pad_token_id if data.pad_token_id not in (None, data.eos_token_id) else None
    model.train()
    step_ms, stamp_steps, stamps, losses = [], [], [], []
    micro = cfg.micro_batch_size
    for step in range(cfg.max_steps):
        start = time.perf_counter()
        share = torch.from_numpy(train.take(order.rank_batch_at(step, rank, world)))
        optimizer.zero_grad(set_to_none=True)
        chunks = share.split(micro) if micro else [share]
        loss = torch.zeros((), device=device)
        for chunk in chunks:  # gradients add up over the micro-batches (no DDP no_sync here)
            ids = chunk.to(device)
            labels = ids if pad is None else ids.masked_fill(ids == pad, -100)
            with autocast:
                part = model(input_ids=ids, labels=labels).loss * (len(chunk) / len(share))
            part.backward()
            loss += part.detach().float()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        if (step + 1) % cfg.log_every == 0:  # a bare loop logs its (rank-averaged) loss too
            logged = loss.detach().reshape(1)
            if world > 1:
                dist.all_reduce(logged)
            losses.append(logged.item() / world)
            stamp_steps.append(step + 1)
            stamps.append(time.perf_counter() * 1000)
        step_ms.append((time.perf_counter() - start) * 1000)
    median, mean, windows = steady_ms(stamp_steps, stamps)
    return {
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        ),
        "ms_per_step": median,
        "ms_per_step_mean": mean,
        "windows_ms": windows,
        "median_single_step_ms": statistics.median(step_ms[cfg.log_every :]),
        "end_to_end_s": time.perf_counter() - t0,
        "losses": dict(zip(stamp_steps, losses, strict=True)),
    }


def _peer_rank(
    rank: int,
    world: int,
    threads: int,
    niceness: int,
    port: int,
    cfg: Any,
    data: Any,
    out: str,
    device: str,
) -> None:
    os.nice(niceness - os.nice(0))
    if world == 1:
        result = peer_loop(cfg, data, threads, device=device)
    else:
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        try:
            result = peer_loop(cfg, data, threads, rank=rank, world=world)
        finally:
            dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps(result))


def peer_run(
    cfg: Any, data: Any, world: int, threads: int, niceness: int, device: str = "cpu"
) -> dict[str, Any]:
    """The bare loop in `world` fresh processes (gloo DDP when more than one) at `niceness`, as
    Cairn's Ray Train workers are: Ray starts its workers at niceness 15, which on a machine
    shared with other jobs decides who gets the cores. Rank 0's timings."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.json")
        t0 = time.perf_counter()
        args = (world, threads, niceness, port, cfg, data, out, device)
        mp.spawn(_peer_rank, args=args, nprocs=world)
        result = json.loads(Path(out).read_text())
    result["losses"] = {int(k): v for k, v in result["losses"].items()}
    result["end_to_end_s"] = time.perf_counter() - t0  # process start and imports included
    return result


def _niceness() -> int:
    return os.nice(0)


def cairn_run(cfg: Any, dataset: Path, workers: int, cpus: int, gpus: float = 0) -> dict[str, Any]:
    """One run of the real pretrain stage (`driver.train`), timed from its own metric records."""
    from cairn.stage import ArtifactType, InputArtifact, Resources
    from cairn.stages.pretrain.driver import train
    from cairn.testing import local_context

    with tempfile.TemporaryDirectory(prefix="cairn-bench-train-") as tmp:  # fresh: no resume
        ctx = local_context(
            Path(tmp),
            resources=Resources(num_workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus),
        )
        inputs = {"dataset": InputArtifact(path=dataset, type=ArtifactType.DATASET, digest="bench")}
        t0 = time.perf_counter()
        train(cfg, inputs, ctx)
        wall = time.perf_counter() - t0
        ctx.flush()
        records = ctx.reporter.drain()
    rows = [r for r in records if r["type"] == "metrics" and "train/loss" in r["values"]]
    steps = [r["step"] for r in rows]
    if steps != list(range(cfg.log_every, cfg.max_steps + 1, cfg.log_every)):
        raise RuntimeError(f"expected a train record every {cfg.log_every} steps, got {steps}")
    median, mean, windows = steady_ms(steps, [float(r["ts"]) for r in rows])
    tokens_per_step = (
        cfg.global_batch_size * json.loads((dataset / "dataset.json").read_text())["seq_len"]
    )
    # The loop's own throughput figure (train/tokens_per_s, what MLflow shows), as ms per step:
    # it should agree with the stamps, which are taken outside the loop's clock.
    later = rows[1:]
    logged = [1000 * tokens_per_step / r["values"]["train/tokens_per_s"] for r in later]
    return {
        "logged_mfu": (
            statistics.median(r["values"]["train/mfu"] for r in later)
            if "train/mfu" in later[0]["values"]
            else None
        ),
        "logged_tokens_per_s_per_worker": statistics.median(
            r["values"]["train/tokens_per_s_per_worker"] for r in later
        ),
        "logs": [r["message"] for r in records if r["type"] == "log"],
        "ms_per_step": median,
        "ms_per_step_mean": mean,
        "windows_ms": windows,
        "logged_ms": statistics.median(logged),
        "end_to_end_s": wall,
        "losses": {r["step"]: r["values"]["train/loss"] for r in rows},
    }


def compare(label: str, rounds: int, peer: Any, cairn: Any, say: Any) -> dict[str, Any]:
    """Alternate peer and cairn `rounds` times; print and return the per-round figures."""
    say(f"\n{label}")
    say(
        f"{'round':<7}{'peer ms/step':>14}{'cairn ms/step':>15}{'ratio':>8}{'best windows':>14}"
        f"{'cairn logged':>15}{'peer e2e':>10}{'cairn e2e':>11}{'max |Δloss|':>13}"
    )
    rows = []
    for r in range(rounds):
        t0 = time.perf_counter()
        p = peer()
        say(f"  round {r + 1}: peer done after {time.perf_counter() - t0:.0f} s", flush=True)
        c = cairn()
        say(f"  round {r + 1}: cairn done after {time.perf_counter() - t0:.0f} s", flush=True)
        common = sorted(set(p["losses"]) & set(c["losses"]))
        dloss = max(abs(p["losses"][s] - c["losses"][s]) for s in common)
        row = {
            "peer": p,
            "cairn": c,
            "ratio": c["ms_per_step"] / p["ms_per_step"],
            "best_ratio": min(c["windows_ms"]) / min(p["windows_ms"]),
            "dloss": dloss,
        }
        rows.append(row)
        say(
            f"{r + 1:<7}{p['ms_per_step']:>14.1f}{c['ms_per_step']:>15.1f}{row['ratio']:>7.3f}×"
            f"{row['best_ratio']:>13.3f}×"
            f"{c['logged_ms']:>15.1f}{p['end_to_end_s']:>9.1f}s{c['end_to_end_s']:>10.1f}s"
            f"{dloss:>13.2g}"
        )
    ratio = statistics.median(r["ratio"] for r in rows)
    summary = {
        "peer_ms_per_step": statistics.median(r["peer"]["ms_per_step"] for r in rows),
        "cairn_ms_per_step": statistics.median(r["cairn"]["ms_per_step"] for r in rows),
        "ratio": ratio,
        "best_window_ratio": statistics.median(r["best_ratio"] for r in rows),
        "ratio_of_means": statistics.median(
            r["cairn"]["ms_per_step_mean"] / r["peer"]["ms_per_step_mean"] for r in rows
        ),
        "cairn_logged_ms": statistics.median(r["cairn"]["logged_ms"] for r in rows),
        "peer_median_single_step_ms": statistics.median(
            r["peer"]["median_single_step_ms"] for r in rows
        ),
        "peer_end_to_end_s": statistics.median(r["peer"]["end_to_end_s"] for r in rows),
        "cairn_end_to_end_s": statistics.median(r["cairn"]["end_to_end_s"] for r in rows),
        "max_abs_loss_diff": max(r["dloss"] for r in rows),
        "rounds": [
            {
                "ratio": r["ratio"],
                "best_window_ratio": r["best_ratio"],
                **{
                    f"{side}_{k}": r[side][k]
                    for side in ("peer", "cairn")
                    for k in ("ms_per_step", "ms_per_step_mean", "windows_ms", "end_to_end_s")
                },
                "peer_peak_memory_gib": r["peer"]["peak_memory_gib"],
                "cairn_logged_mfu": r["cairn"]["logged_mfu"],
                "cairn_logged_tokens_per_s_per_worker": r["cairn"][
                    "logged_tokens_per_s_per_worker"
                ],
                "cairn_logs": r["cairn"]["logs"],
            }
            for r in rows
        ],
    }
    say(
        f"{'median':<7}{summary['peer_ms_per_step']:>14.1f}{summary['cairn_ms_per_step']:>15.1f}"
        f"{ratio:>7.3f}×{summary['best_window_ratio']:>13.3f}×{summary['cairn_logged_ms']:>15.1f}"
        f"{summary['peer_end_to_end_s']:>9.1f}s{summary['cairn_end_to_end_s']:>10.1f}s"
    )
    say(
        "best windows: the fastest window of each side (least disturbed by other jobs); "
        "logged: Cairn's own figure (train/tokens_per_s, in MLflow) as ms per step; "
        "e2e: the whole train() call with Ray Train start-up, final eval, checkpoint and export "
        "(peer: process start, model build and loop)"
    )
    say(
        f"cairn/peer = {ratio:.2f}× (target ≤ {TARGET:.2f}×; median of {rounds} rounds; "
        f"steady-state means {summary['ratio_of_means']:.2f}×, "
        f"best windows {summary['best_window_ratio']:.2f}×)"
    )
    return summary


def recipe(path: Path) -> tuple[dict[str, Any], int, int]:
    """A workflow's pretrain config (validated as `cairn validate` does) and its curate step's
    seq_len and vocab_size."""
    from cairn.workflow import load_workflow

    steps = load_workflow(path).steps.values()
    curate: Any = next(s.config for s in steps if s.kind == "curate")
    pretrain = next(s.config for s in steps if s.kind == "pretrain")
    return pretrain.model_dump(), curate.seq_len, curate.vocab_size


def gpu_figures(cfg: Any, data: Any, summary: dict[str, Any], say: Any) -> dict[str, Any]:
    """MFU and tokens/s per GPU from the stamps (both sides) and from Cairn's own metrics."""
    import torch

    from cairn.stages.pretrain.flops import device_peak, flops_per_token, mfu
    from cairn.stages.pretrain.model import llama_config

    name = torch.cuda.get_device_name(0)
    peak = device_peak(name, cfg.dtype)
    per_token = flops_per_token(llama_config(cfg, data), data.seq_len)
    tokens_per_step = cfg.global_batch_size * data.seq_len
    rounds = summary["rounds"]

    def median(key: str) -> Any:
        values = [r[key] for r in rounds]
        return None if None in values else statistics.median(values)

    out: dict[str, Any] = {
        "device": name,
        "peak_tflops": peak[0] / 1e12 if peak else None,
        "peak_source": peak[1] if peak else None,
        "gflops_per_token": per_token / 1e9,
        "cairn_logged_mfu": median("cairn_logged_mfu"),
        "cairn_logged_tokens_per_s_per_gpu": median("cairn_logged_tokens_per_s_per_worker"),
        "peer_peak_memory_gib": max(r["peer_peak_memory_gib"] for r in rounds),
        "cairn_logs": rounds[-1]["cairn_logs"],
    }
    for side in ("peer", "cairn"):
        rate = tokens_per_step / (summary[f"{side}_ms_per_step"] / 1000)
        out[f"{side}_tokens_per_s_per_gpu"] = rate
        out[f"{side}_mfu"] = mfu(rate, per_token, peak[0]) if peak else None
    say(
        f"\n{name}: {per_token / 1e9:.2f} GFLOP/token (training), peak {out['peak_tflops']} TFLOP/s"
    )
    for side in ("peer", "cairn"):
        m = out[f"{side}_mfu"]
        say(
            f"  {side:<6}{out[f'{side}_tokens_per_s_per_gpu']:>10,.0f} tokens/s/GPU"
            + (f"   MFU {m:.1%}" if m is not None else "")
        )
    if out["cairn_logged_mfu"] is not None:
        say(
            f"  cairn's own train/mfu (MLflow): {out['cairn_logged_mfu']:.1%}, "
            f"{out['cairn_logged_tokens_per_s_per_gpu']:,.0f} tokens/s/GPU"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating peer/cairn rounds")
    ap.add_argument("--log-every", type=int, default=10, help="steps per timed window")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8, help="global batch (sequences)")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--ddp", action="store_true", help="also 2 workers × 1 CPU vs gloo DDP")
    ap.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: one worker on one GPU (cairn) against the bare loop on that GPU (peer); "
        "adds MFU and tokens/s/GPU",
    )
    ap.add_argument(
        "--recipe",
        type=Path,
        help="a workflow file: the model shape, dtype, micro-batch and sharding of its pretrain "
        "step and the seq_len/vocab_size of its curate step replace --hidden/--layers/--seq-len/"
        "--vocab (e.g. workflows/pretrain-1b-gpu.yaml); --steps and --batch still apply",
    )
    ap.add_argument("--sharding", choices=("auto", "ddp", "fsdp"), help="override the recipe's")
    ap.add_argument(
        "--dataset",
        type=Path,
        help="a curate step's dataset directory to train on instead of building one here "
        "(--seq-len/--vocab then come from it)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads a side (and CPUs)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    ap.add_argument("--json-out", type=Path, help="also write the results as JSON to this file")
    args = ap.parse_args()
    if args.steps < 3 * args.log_every or args.steps % args.log_every:
        raise SystemExit("--steps must be a multiple of --log-every and at least 3 windows")
    say = (lambda *a, **k: None) if args.json else print
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" at each export

    import ray

    from cairn.stages.pretrain import PretrainConfig
    from cairn.stages.pretrain.data import inspect_dataset
    from cairn.stages.pretrain.model import build_model, count_parameters, llama_config

    shape: dict[str, Any] = {
        "hidden_size": args.hidden,
        "num_layers": args.layers,
        "num_heads": args.hidden // 64,  # head_dim 64
    }
    seq_len, vocab = args.seq_len, args.vocab
    if args.recipe:
        shape, seq_len, vocab = recipe(args.recipe)
    if args.sharding:
        shape["sharding"] = args.sharding
    cfg = PretrainConfig(
        **{
            **shape,
            "global_batch_size": args.batch,
            "max_steps": args.steps,
            "warmup_steps": min(10, args.steps),
            "checkpoint_every": args.steps,  # one checkpoint, after the last step
            "eval_every": 0,  # validation only after the last step
            "eval_batches": 1,
            "log_every": args.log_every,
            "max_failures": 0,
        }
    )
    scratch = tempfile.TemporaryDirectory(prefix="cairn-bench-train-data-")
    dataset = (
        args.dataset.resolve()
        if args.dataset
        else build_dataset(Path(scratch.name) / "dataset", seq_len, vocab)
    )
    data = inspect_dataset(dataset)
    threads = args.threads
    gpus = 1 if args.device == "cuda" else 0
    # address="local": a Ray of our own, even when `ray start` left a cluster on this machine
    # (whose CPUs and other jobs we would otherwise share and time).
    ray.init(
        address="local",
        num_cpus=threads,
        num_gpus=gpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    logging.getLogger("ray").setLevel(logging.ERROR)
    niceness = ray.get(ray.remote(num_cpus=0)(_niceness).remote())  # Ray Train's workers' too

    import torch

    with torch.device("meta"):  # shapes only: a 1B model's random init takes a while on CPU
        params = count_parameters(build_model(llama_config(cfg, data), cfg.seed))
    say(
        f"model: Llama, {params:,} parameters (hidden {cfg.hidden_size}, {cfg.num_layers} layers,"
        f" {cfg.num_heads} heads, vocab {data.vocab_size}); seq {data.seq_len} × global batch "
        f"{cfg.global_batch_size} "
        f"({data.train_sequences} train sequences from {dataset}); {cfg.max_steps} steps, a "
        f"window every {cfg.log_every}, first window dropped; {args.rounds} rounds alternating; "
        f"peer processes at niceness {niceness}, as Ray's workers"
    )
    results: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "parameters": params,
        "worker_niceness": niceness,
        "seq_len": data.seq_len,
        "vocab_size": data.vocab_size,
        "train_sequences": data.train_sequences,
    }
    where = "one GPU, " if gpus else ""
    results["one_worker"] = compare(
        f"1 worker × {where}{threads} threads (cairn) vs one process × {where}{threads} threads "
        "(peer)",
        args.rounds,
        lambda: peer_run(
            cfg, data, world=1, threads=threads, niceness=niceness, device=args.device
        ),
        lambda: cairn_run(cfg, dataset, workers=1, cpus=threads, gpus=gpus),
        say,
    )
    if gpus:
        results["gpu"] = gpu_figures(cfg, data, results["one_worker"], say)
    if args.ddp:
        results["two_workers"] = compare(
            "2 workers × 1 thread (cairn, DDP over gloo) vs 2 processes × 1 thread (peer, gloo "
            "DDP)",
            args.rounds,
            lambda: peer_run(cfg, data, world=2, threads=1, niceness=niceness),
            lambda: cairn_run(cfg, dataset, workers=2, cpus=1),
            say,
        )
    ray.shutdown()
    scratch.cleanup()
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
