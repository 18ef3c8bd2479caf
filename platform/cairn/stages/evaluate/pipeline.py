"""The evaluate stage end to end: check inputs → prepare the task folder → refuse its Python
unless trusted → decontamination gate → run lm-eval → report.

This module only sequences the phases and reports on them; `taskdir` makes the user's task
folder safe to run from any working directory, `taskcode` refuses the Python it names unless
the step trusts it, `gate` refuses tasks whose data was not checked
against the model's training data, `harness` runs lm-eval, `report` writes the artifact. The
checks that need no model come first, so a bad task name, a missing data file or an unchecked
task fails in seconds instead of after the model has loaded, and leaves no output behind.
"""

from __future__ import annotations

import time
from typing import Any

from cairn.errors import StageError
from cairn.stage import Context, InputArtifact, Inputs
from cairn.stages.evaluate import gate, harness, report, taskcode, taskdir
from cairn.stages.evaluate.config import EvaluateConfig


def evaluate(config: EvaluateConfig, inputs: Inputs, ctx: Context) -> dict[str, Any]:
    """Evaluate `inputs["model"]` on `config.tasks`; returns the eval_report's metadata."""
    started = time.monotonic()
    model = _one(inputs, "model")
    tasks_input = _one(inputs, "tasks")
    out = ctx.output_path("eval_report")
    report.clear(out)

    harness.check_model(model.path, config)
    ctx.progress(0, None, "preparing tasks")
    harness.go_offline()  # before lm-eval's import pulls in datasets and huggingface_hub
    tasks = taskdir.prepare(tasks_input.path, ctx.scratch_dir / "tasks", list(config.tasks))
    task_code = taskcode.check(config.trust_task_code, tasks)
    if task_code["python_files"]:
        files = ", ".join(f["path"] for f in task_code["python_files"])
        ctx.log(f"evaluate: trust_task_code is true: lm-eval runs the tasks' Python ({files})")
    anchored = f"; anchored data paths in {len(tasks.rewritten)} YAML(s)" if tasks.rewritten else ""
    ctx.log(
        f"evaluate: {len(tasks.leaves)} task(s) from {tasks_input.name or tasks_input.path}: "
        f"{', '.join(tasks.leaves)}{anchored}"
    )
    contamination = gate.check(config, model, tasks_input, tasks, ctx)
    _log_contamination(contamination, ctx)
    if config.add_bos_token and "loglikelihood_rolling" in tasks.output_types.values():
        # Measured with lm-eval 0.4.13: rolling windows already start from one BOS, and an
        # encoder that adds another makes the score include log p(BOS | BOS).
        ctx.log(
            "evaluate: warning: add_bos_token is true, so lm-eval also scores a second BOS in "
            "each perplexity document; leave it unset for perplexity tasks"
        )
    ctx.check_cancelled()

    # The thread count a CPU kernel sums with can move a score in its last bits, and the report
    # records it: set it from the step's resources, not from whatever an earlier task left in
    # this (reused) Ray worker, so that an evaluation repeated anywhere is byte-identical.
    import torch

    torch.set_num_threads(max(1, int(ctx.resources.cpus_per_worker)))
    results, facts = harness.evaluate(
        config, model.path, tasks.manager, list(tasks.output_types.values()), ctx
    )
    ctx.check_cancelled()

    written = report.write(
        out, config, model, tasks_input, tasks, results, facts, contamination, task_code
    )
    from lm_eval.utils import make_table  # the table `lm_eval run` prints, for the step log

    ctx.log("evaluate: scores\n" + make_table(results))
    metrics = written["metrics"]
    ctx.progress(1, 1, "done")
    # The time is the log's, not the report's: report.json is the same for the same evaluation.
    ctx.log(
        f"evaluate: wrote report.json and {len(results.get('samples') or {})} sample file(s) "
        f"in {time.monotonic() - started:.1f}s"
    )
    return {
        "model_digest": model.digest,
        "metrics": metrics,
        "allow_contaminated": config.allow_contaminated,
        "contamination": gate.summary(contamination),
        "trust_task_code": config.trust_task_code,
        "task_code": task_code["python_files"],
    }


def _log_contamination(record: dict[str, Any], ctx: Context) -> None:
    if record["unchecked"]:
        ctx.log(
            f"evaluate: warning: allow_contaminated is true: scoring {len(record['unchecked'])} "
            f"task(s) whose data was not checked against the training data "
            f"({', '.join(sorted(record['unchecked']))}); the report and release say so"
        )
    else:
        steps = ", ".join(d["step"] for d in record["datasets"])
        ctx.log(f"evaluate: every task's data was checked for overlap by dataset step(s) {steps}")
    found = record["contaminated_docs"]
    if found:
        counts = ", ".join(f"{n} {action}" for action, n in sorted(found.items()))
        ctx.log(f"evaluate: training documents overlapping these tasks' data: {counts}")
    if found.get("flagged"):
        ctx.log(
            "evaluate: warning: flagged documents stayed in the training data "
            "(decontaminate.action: flag), so the scores may be inflated"
        )


def _one(inputs: Inputs, slot: str) -> InputArtifact:
    given = inputs.get(slot)
    if isinstance(given, list):
        if len(given) != 1:
            raise StageError(f"evaluate takes exactly one `{slot}` input; got {len(given)}")
        given = given[0]
    if given is None:
        example = "pretrain.model" if slot == "model" else "./evals/shakespeare"
        raise StageError(
            f"evaluate needs a `{slot}` input; fix: add `{slot}: {example}` under the step's inputs"
        )
    return given
