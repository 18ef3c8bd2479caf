"""The `evaluate` stage kind: score a model on lm-evaluation-harness tasks with local data.

Inputs: a `model` (a Hugging Face directory with its tokenizer) and `tasks` (a folder of task
YAMLs in lm-eval's format plus their data files, as for `lm_eval --include_path DIR`; being an
input, every file in it is digested and enters the lineage). Output: an `eval_report` with
`report.json` (scores, digests of the model and of every task and data file, versions, seeds,
settings and the equivalent `lm_eval` command line), per-sample predictions under `samples/`
and the task files under `tasks/`, as that command reads them. The same evaluation writes the
same report, byte for byte (report.py). See `pipeline.py` for the phases.

A task is scored only if every curated dataset in the model's lineage checked its data files for
n-gram overlap (the curate step's `eval_tasks` input), or if the step sets `allow_contaminated:
true`, which the report and the release record (`gate.py`).

lm-eval, torch and transformers are imported inside `run`, so importing the registry stays cheap.
"""

from __future__ import annotations

from cairn.stage import ArtifactType, Context, Inputs, InputSlot, Outputs, StageSpec, register
from cairn.stages.evaluate.config import EvaluateConfig


def run(config: EvaluateConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Evaluate the model on the tasks and write the `eval_report` output."""
    from cairn.stages.evaluate.pipeline import evaluate

    return {"eval_report": evaluate(config, inputs, ctx)}


SPEC = register(
    StageSpec(
        kind="evaluate",
        config_model=EvaluateConfig,
        inputs={
            "model": InputSlot(
                ArtifactType.MODEL, doc="a Hugging Face model directory with its tokenizer"
            ),
            "tasks": InputSlot(
                ArtifactType.RAW,
                doc="a folder of lm-eval task YAMLs and their data files (dataset_path: json, "
                "data_files relative to the YAML), e.g. ./evals/shakespeare",
            ),
        },
        outputs={"eval_report": ArtifactType.EVAL_REPORT},
        run=run,
        launcher="task",
        result_packages=("lm_eval", "torch", "transformers", "datasets", "tokenizers"),
        doc="Score a model on lm-evaluation-harness tasks (multiple choice, generation, perplexity) "
        "with local data; writes scores, per-sample predictions and everything needed to "
        "reproduce them.",
    )
)

__all__ = ["SPEC", "EvaluateConfig", "run"]
