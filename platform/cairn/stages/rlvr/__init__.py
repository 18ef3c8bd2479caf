"""The `rlvr` stage kind: reinforcement learning with verifiable rewards (Tülu 3's last stage).

Inputs: `model` (a Hugging Face model directory with its tokenizer, typically a dpo step's output)
and `data` (prompts in Tülu 3's RLVR format: `messages`, `ground_truth`, `dataset`; see
`recipe.py`). Each prompt's completions are sampled, scored by the verifier its `dataset` names
(`verifiers.py`: pure functions, no reward model) and the policy is optimised with GRPO against a
frozen reference (the input model) with a KL penalty `beta`. Output: a `model` directory in the
same layout, with `training_metrics.jsonl` (reward mean and std overall and per verifier, the
fraction of groups with equal rewards, KL, clip fraction, completion length, entropy, tokens/s),
`rollouts.jsonl` (every prompt's completions and rewards, step by step), `loss.png` and
`reward.png`.

Training is TRL's `GRPOTrainer` (`recipe.py`) inside Ray Train, through the post-training base
(`cairn.stages.posttrain`), as sft and dpo. Rollouts are sampled by transformers' generate on CPU
and by vLLM (TRL's colocate mode) on GPU workers, chosen as `serve` chooses its engine.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from cairn.errors import StageError
from cairn.stage import Context, Inputs, Outputs, register
from cairn.stage.plots import plot_series
from cairn.stages.posttrain import posttrain_spec
from cairn.stages.rlvr.config import RlvrConfig
from cairn.stages.rlvr.recipe import check_data, reward_trend

# Steps in the running mean drawn over the reward curve.
SMOOTH = 10


def run(config: RlvrConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Optimise against the verifiers with Ray Train and write the `model` output."""
    from cairn.stages.posttrain.driver import train
    from cairn.stages.rlvr.recipe import RLVR, rollout_engine

    engine = rollout_engine(config, ctx.resources.gpus_per_worker > 0)
    if engine == "vllm" and ctx.resources.gpus_per_worker == 0:
        raise StageError(
            "rlvr: rollout_engine vllm runs vLLM inside each training process on its GPU (TRL's "
            "colocate mode), and this step has no GPUs; fix: set resources.gpus_per_worker: 1, "
            "or rollout_engine: auto (transformers on CPU)"
        )
    ctx.log(f"rlvr: rollouts sampled by {engine}")
    outputs = train(RLVR, config, inputs, ctx)
    outputs["model"]["rollout_engine"] = engine
    history = _plot_rewards(ctx)
    outputs["model"].update(reward_trend(history))
    trend = outputs["model"]
    if trend.get("reward_first") is not None:
        ctx.log(
            f"rlvr: mean reward {trend['reward_first']} over the first {trend['reward_window']} "
            f"steps, {trend['reward_last']} over the last {trend['reward_window']}"
        )
    return outputs


def _plot_rewards(ctx: Context) -> list[dict[str, Any]]:
    """reward.png: the mean reward, overall and per verifier, step by step, with the overall
    reward's running mean over SMOOTH steps (one step's reward is noisy); returns the rows."""
    out = ctx.output_path("model")
    rows = [json.loads(line) for line in (out / "training_metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in rows if r.get("reward") is not None]
    smoothed = [
        {
            "step": r["step"],
            f"reward, mean of {SMOOTH} steps": sum(rewards[i - SMOOTH + 1 : i + 1]) / SMOOTH,
        }
        for i, r in enumerate(r for r in rows if r.get("reward") is not None)
        if i >= SMOOTH - 1
    ]
    plot_series(
        [*rows, *smoothed],
        out / "reward.png",
        f"{ctx.step} (rlvr): mean verifiable reward",
        lambda key: key.startswith("reward") and not key.endswith("/std") and key != "reward_std",
        "reward (1: verified)",
    )
    return rows


SPEC = register(
    replace(
        posttrain_spec(
            "rlvr",
            RlvrConfig,
            run,
            data_doc="RLVR prompts (messages, ground_truth, dataset): .jsonl file or directory",
            doc=(
                "Reinforcement learning with verifiable rewards (GRPO, KL to a frozen reference) "
                "with TRL's GRPOTrainer on Ray Train; rewards from pure verifier functions."
            ),
        ),
        check_inputs=check_data,
    )
)

__all__ = ["SPEC", "RlvrConfig", "run"]
