"""rlvr's recipe: Tülu 3 RLVR rows, verifiers as rewards, TRL's GRPOTrainer (posttrain/recipe.py).

A row is a prompt with a checkable answer, in the format of Tülu 3's RLVR sets:
`{"messages": [...turns ending with the user's...], "ground_truth": "42", "dataset": "gsm8k"}`;
IFEval rows carry their constraint as JSON in `ground_truth`. `dataset` names the verifier through
the step's `verifiers` map (over `verifiers.DEFAULT_DATASETS`). Rows are checked twice with the
same code: by `cairn validate` before Ray starts when the data is a file the workflow names
(`check_data`, the stage's `check_inputs`), and by the driver before training in every case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.errors import SpecIssue, StageError
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.posttrain.chat import ids
from cairn.stages.posttrain.config import PosttrainConfig
from cairn.stages.posttrain.data import Example, Row, fields, read_examples
from cairn.stages.posttrain.recipe import Recipe
from cairn.stages.rlvr import verifiers
from cairn.stages.rlvr.config import RlvrConfig

# How many bad rows `cairn validate` lists for one data file before it stops reading.
SHOW_ISSUES = 5


class RlvrRecipe(Recipe):
    kind = "rlvr"

    def row(self, row: Row, obj: dict[str, Any]) -> dict[str, Any]:
        """`messages` ending with a user turn, `ground_truth` and `dataset` (the verifier)."""
        for name in ("messages", "ground_truth", "dataset"):
            if name not in obj:
                raise row.error(
                    name,
                    f"is missing (this row has {fields(obj)})",
                    'write {"messages": [{"role": "user", "content": ...}], "ground_truth": ..., '
                    '"dataset": ...} as Tülu 3\'s RLVR sets do',
                )
        messages = row.messages(obj["messages"], "messages", ("system", "user", "assistant"))
        if messages[-1]["role"] != "user":
            raise row.error(
                f"messages[{len(messages) - 1}].role",
                f"is {messages[-1]['role']}, but the prompt must end with the user turn the "
                "policy answers",
                "end `messages` with a user turn (the answer is generated, not given)",
            )
        truth = obj["ground_truth"]
        if isinstance(truth, bool) or not isinstance(truth, str | int | float):
            raise row.error(
                "ground_truth",
                f"is a {type(truth).__name__}",
                "give the answer as a string (a number may be a JSON number); IFEval constraints "
                "as a JSON string",
            )
        dataset = obj["dataset"]
        if not isinstance(dataset, str) or not dataset.strip():
            raise row.error(
                "dataset", "is not a name", 'name the verifier\'s data set, e.g. "gsm8k"'
            )
        return {"prompt": messages, "ground_truth": str(truth), "dataset": dataset}

    def lengths(self, fields: dict[str, Any], tok: Any) -> tuple[int, list[int]]:
        # The completion is generated, so what max_length holds of a row is its prompt; the
        # room left for the completion is checked in `check` (it needs the config).
        prompt = len(ids(tok, fields["prompt"], generation_prompt=True))
        return prompt, [prompt]

    def check(self, examples: list[Example], config: PosttrainConfig, tok: Any) -> None:
        assert isinstance(config, RlvrConfig)
        issue = next(iter(row_issues(examples, config)), None)
        if issue is not None:
            raise StageError(str(issue))
        room = config.max_length - config.max_completion_length
        for ex in examples:
            prompt = len(ids(tok, ex.fields["prompt"], generation_prompt=True))
            if prompt > room:
                raise StageError(
                    f"{ex.origin}: field `messages` is {prompt} tokens as a prompt, leaving less "
                    f"than max_completion_length ({config.max_completion_length}) within "
                    f"max_length ({config.max_length}); fix: raise config.max_length to at "
                    f"least {prompt + config.max_completion_length} or shorten the prompt"
                )

    def trainer(
        self,
        *,
        model: Any,
        args: dict[str, Any],
        dataset: Any,
        tokenizer: Any,
        callbacks: list[Any] | None,
        config: PosttrainConfig,
        peft_config: Any = None,
    ) -> Any:
        from trl import GRPOConfig, GRPOTrainer

        from cairn.stages.rlvr.rewards import reward_functions

        assert isinstance(config, RlvrConfig)
        args = {k: v for k, v in args.items() if k != "max_length"}  # GRPO has no such field
        grpo_args = GRPOConfig(
            **args,
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            top_p=config.top_p,
            beta=config.beta,
            epsilon=config.epsilon,
            loss_type=config.loss_type,
            scale_rewards=config.scale_rewards,
            use_vllm=rollout_engine(config, not args.get("use_cpu", True)) == "vllm",
            vllm_mode="colocate",
            log_completions=False,  # Cairn's Rollouts records them (TRL would print a table)
        )
        mapping = config.verifier_map()
        return GRPOTrainer(
            model=model,
            reward_funcs=reward_functions(mapping, set(dataset["dataset"])),
            args=grpo_args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )

    def recorders(self, config: PosttrainConfig, rank: int) -> list[Any]:
        from cairn.stages.rlvr.rewards import Rollouts

        assert isinstance(config, RlvrConfig)
        return [Rollouts(rank, config.num_generations)]

    def metadata(self, last: dict[str, Any]) -> dict[str, Any]:
        return {
            "final_reward": last.get("reward"),
            "final_kl": last.get("kl"),
            "final_frac_reward_zero_std": last.get("frac_reward_zero_std"),
        }


def reward_trend(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean reward over the first and the last quarter of the logged steps, overall and per
    verifier: what the model card reports (one step's reward is too noisy to compare)."""
    rows = [r for r in history if r.get("reward") is not None]
    if len(rows) < 2:
        return {}
    n = max(1, len(rows) // 4)

    def avg(key: str, part: list[dict[str, Any]]) -> float | None:
        values = [r[key] for r in part if r.get(key) is not None]
        return round(sum(values) / len(values), 4) if values else None

    keys = sorted({k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    return {
        "reward_window": n,
        "reward_first": avg("reward", rows[:n]),
        "reward_last": avg("reward", rows[-n:]),
        "reward_by_verifier": {
            k.split("/")[1]: {"first": avg(k, rows[:n]), "last": avg(k, rows[-n:])} for k in keys
        },
    }


def rollout_engine(config: RlvrConfig, gpu: bool) -> str:
    """What samples the completions: vLLM (TRL's colocate mode) on GPU workers with the official
    build, else transformers' generate. vLLM's CPU build is not used: TRL's colocate mode
    shares the training process's CUDA device with it."""
    if config.rollout_engine != "auto":
        return config.rollout_engine
    if not gpu:
        return "transformers"
    from cairn.serving.engines import probe

    machine = probe()
    return "vllm" if machine.vllm is not None and not machine.vllm_runs_on_cpu else "transformers"


def row_issues(examples: list[Example], config: RlvrConfig) -> list[SpecIssue]:
    """Rows whose `dataset` has no verifier, or whose ground truth that verifier cannot score."""
    mapping = config.verifier_map()
    issues = []
    for ex in examples:
        file, _, line = ex.origin.rpartition(":")
        where = (file, int(line) if line.isdigit() else None)
        dataset = ex.fields["dataset"]
        name = mapping.get(dataset.lower())
        if name is None:
            known = ", ".join(f"{d} ({v})" for d, v in sorted(mapping.items()))
            issues.append(
                SpecIssue(
                    *where,
                    "dataset",
                    f"'{dataset}' has no verifier (known: {known})",
                    f"map it in the step's config, e.g. verifiers: {{{dataset}: final_number}} "
                    f"(verifiers: {', '.join(sorted(verifiers.REGISTRY))})",
                )
            )
        else:
            problem = verifiers.problem(name, ex.fields["ground_truth"], ex.fields)
            if problem is not None:
                issues.append(
                    SpecIssue(
                        *where,
                        "ground_truth",
                        f"cannot be scored by the '{name}' verifier: {problem}",
                        f"fix the answer, or map dataset '{dataset}' to another verifier",
                    )
                )
        if len(issues) >= SHOW_ISSUES:
            break
    return issues


def check_data(config: Any, paths: dict[str, list[Path]]) -> list[SpecIssue]:
    """`cairn validate`'s look at a data file the workflow names: every row's form, verifier and
    ground truth, before Ray starts (the stage's `check_inputs`)."""
    issues: list[SpecIssue] = []
    for path in paths.get("data", []):
        label = str(path)
        try:
            examples = read_examples(InputArtifact(path, ArtifactType.RAW, "", name=label), RLVR)
        except StageError as e:
            issues.append(_issue(str(e), label))
            continue
        issues.extend(row_issues(examples, config))
    return issues


def _issue(error: str, label: str) -> SpecIssue:
    """A row error (`file:line: field `x` problem; fix: ...`) as a validation issue."""
    where, _, rest = error.partition(": ")
    file, _, line = where.rpartition(":")
    message, _, fix = rest.partition("; fix: ")
    field = "data"
    if message.startswith("field `"):
        field, _, message = message.removeprefix("field `").partition("` ")
    return SpecIssue(
        file or label, int(line) if line.isdigit() else None, field, message, fix or "fix the row"
    )


RLVR = RlvrRecipe()
