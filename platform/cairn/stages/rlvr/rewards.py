"""The verifiers as TRL reward functions, and the record of every rollout they scored.

TRL's GRPOTrainer calls each reward function with the batch's prompts, completions and the
dataset's other columns (here `ground_truth` and `dataset`). Cairn gives it one function per
verifier the data uses, each scoring only the rows whose `dataset` maps to it and returning None
for the others: TRL then logs `rewards/<verifier>/mean` and `/std` per verifier on its own, and
sums the functions (a row has exactly one score) into the reward GRPO normalises per group.

`Rollouts` keeps what was generated and how it scored, step by step, and writes it as
`rollouts.jsonl` beside the model's `training_metrics.jsonl`: one row per prompt and step with
its completions, their rewards and advantages. A resumable checkpoint carries the rows so far,
so a resumed run's file has no gap.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from cairn.stages.rlvr import verifiers

ROLLOUTS_FILE = "rollouts.jsonl"


def completion_text(completion: Any) -> str:
    """A completion's text: TRL passes a list of turns for chat prompts, a string otherwise."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


class VerifierReward:
    """One verifier as a reward function (a picklable instance: Ray Train ships it to workers).

    `mapping` sends each `dataset` value to its verifier's name; rows of other verifiers get None.
    The first function of a run (`records=True`) also hands the rows' ground truth and dataset
    to TRL's completion log, which `Rollouts` reads, and logs rollout throughput."""

    def __init__(self, name: str, mapping: Mapping[str, str], records: bool = False) -> None:
        self.__name__ = name  # TRL names the function's metrics after it
        self.name = name
        self.mapping = dict(mapping)
        self.records = records
        self._last: float | None = None

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]] | None = None,
        ground_truth: list[str] | None = None,
        dataset: list[str] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        score = verifiers.get(self.name)
        truths, sets = ground_truth or [], dataset or []
        out: list[float | None] = []
        for i, completion in enumerate(completions):
            if self.mapping.get(sets[i].lower()) != self.name:
                out.append(None)
                continue
            row = {"ground_truth": truths[i], "dataset": sets[i]}
            out.append(float(score(completion_text(completion), truths[i], row)))
        if self.records:
            self._record(kwargs, truths, sets, completion_ids)
        return out

    def _record(
        self,
        kwargs: dict[str, Any],
        truths: list[str],
        sets: list[str],
        completion_ids: list[list[int]] | None,
    ) -> None:
        if "log_extra" in kwargs:
            kwargs["log_extra"]("ground_truth", list(truths))
            kwargs["log_extra"]("dataset", list(sets))
        # Tokens generated per second of wall time, between two calls (one generation and one
        # optimizer step apart), over every worker: this worker's share times their number.
        now = time.monotonic()
        if self._last is not None and completion_ids is not None and "log_metric" in kwargs:
            tokens = sum(len(c) for c in completion_ids) * _world_size()
            kwargs["log_metric"]("tokens_per_s", tokens / max(now - self._last, 1e-9))
        self._last = now


def reward_functions(mapping: Mapping[str, str], used: set[str]) -> list[Any]:
    """One reward function per verifier the data's `dataset` values use, the first recording."""
    names = sorted({mapping[d.lower()] for d in used})
    return [VerifierReward(n, mapping, records=i == 0) for i, n in enumerate(names)]


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class Rollouts(TrainerCallback):
    """Collects each step's rollouts on rank 0 from TRL's completion log (gathered from every
    worker), saves them with each transformers checkpoint and exports them with the model."""

    def __init__(self, rank: int, num_generations: int) -> None:
        self.rank = rank
        self.num_generations = num_generations
        self.rows: list[dict[str, Any]] = []
        self.trainer: Any = None

    def attach(self, trainer: Any) -> None:
        self.trainer = trainer

    def resume(self, checkpoint_dir: Path) -> None:
        """Take the rows a resumable checkpoint saved (rank 0; the others keep none)."""
        path = checkpoint_dir / ROLLOUTS_FILE
        if self.rank == 0 and path.is_file():
            self.rows = [json.loads(line) for line in path.read_text().splitlines() if line]

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.rank != 0 or self.trainer is None:
            return
        logs = self.trainer._logs  # TRL's completion log: the last generation batch, gathered
        prompts, completions = list(logs["prompt"]), list(logs["completion"])
        rewards = {name: list(values) for name, values in logs["rewards"].items()}
        advantages = list(logs["advantages"])
        extra = {name: list(values) for name, values in logs["extra"].items()}
        n = self.num_generations
        for start in range(0, len(prompts) - n + 1, n):
            group = range(start, start + n)
            prompt = prompts[start]
            self.rows.append(
                {
                    "step": state.global_step,
                    "prompt": prompt,
                    "dataset": _at(extra.get("dataset"), start),
                    "ground_truth": _at(extra.get("ground_truth"), start),
                    "completions": [completion_text(completions[i]) for i in group],
                    "rewards": {
                        name: [_finite(values[i]) for i in group]
                        for name, values in rewards.items()
                        if any(not math.isnan(values[i]) for i in group)
                    },
                    "advantages": [_finite(advantages[i]) for i in group],
                }
            )

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Runs before Ray's report callback copies the checkpoint (it is listed first)."""
        if self.rank != 0:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.export(folder)

    def export(self, folder: Path) -> None:
        (folder / ROLLOUTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in self.rows))


def _at(values: list[Any] | None, i: int) -> Any:
    return values[i] if values is not None and i < len(values) else None


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)
