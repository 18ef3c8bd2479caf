"""The settings of an `evaluate` step, kept apart so the stage's modules can share them.

Most fields change the scores and so are part of the step's identity; `allow_contaminated` and
`trust_task_code` change what the report says about them (and whether the step runs at all), so
they are too: a result made by running the folder's Python is not the same artifact as a refusal
to run it, and must not be found in the cache under a step that does not trust it. `batch_size` is not: lm-eval
pads each batch, which can move a score in its last float bits but not beyond, and it is chosen
for memory and speed; the report still records the batch size that was used.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cairn.stage import Runtime, StageConfig

# lm-eval's default for the stderr of metrics without a closed form (perplexity, f1, bleu, ...).
# Not a setting: `lm_eval run` has no flag for it, and the report's command must reproduce the run.
BOOTSTRAP_ITERS = 100_000


class EvaluateConfig(StageConfig):
    """Which tasks to run on the model, and how, with lm-evaluation-harness."""

    tasks: list[str] = Field(
        min_length=1,
        description="task, group or tag names defined by the YAML files of the `tasks` input "
        "(as for `lm_eval --include_path DIR --tasks ...`)",
    )
    num_fewshot: int | None = Field(
        None,
        ge=0,
        le=1024,
        description="few-shot examples per prompt for every task; none: each task's own "
        "num_fewshot (0 if it sets none)",
    )
    limit: int | None = Field(
        None,
        ge=1,
        description="evaluate only the first N documents of each task (for smoke tests: the "
        "scores are not comparable to a full run); none: all",
    )
    seed: int = Field(
        1234,
        ge=0,
        description="seeds Python's random, numpy, torch and the few-shot sampler (lm_eval "
        "--seed N sets all four to N)",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype the model is loaded in"
    )
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?|mps)$",
        description="torch device to evaluate on: cpu, cuda, cuda:N or mps",
    )
    max_length: int | None = Field(
        None,
        ge=8,
        description="context window in tokens (longer documents are scored in rolling windows, "
        "long prompts are left-truncated); none: the model's max_position_embeddings",
    )
    add_bos_token: bool | None = Field(
        None,
        description="prepend BOS to every context (lm-eval's add_bos_token); none: the "
        "tokenizer's own behaviour. Rolling perplexity is always conditioned on one BOS; "
        "with true it would also score the BOS itself",
    )
    allow_contaminated: bool = Field(
        False,
        description="score tasks even where their data was not checked for overlap with the "
        "model's training data (no curate step in the model's lineage listed the task folder "
        "under `eval_tasks`, or the model was trained outside Cairn); the report and the "
        "release then say so. Without it such a step fails before anything is scored",
    )
    trust_task_code: bool = Field(
        False,
        description="let lm-eval run the Python that the task YAMLs name with `!function` "
        "(process_docs, doc_to_text, metrics, `class:` tasks), which runs with this step's "
        "permissions; the report and the release list the Python files that ran, with their "
        "sha256. Without it a task folder that names Python is refused before anything runs",
    )
    batch_size: Runtime[int] = Field(
        16,
        ge=1,
        le=4096,
        description="requests per forward pass (memory and speed only)",
    )
