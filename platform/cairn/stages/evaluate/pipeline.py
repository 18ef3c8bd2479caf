"""The evaluate stage end to end: check inputs → prepare the task folder → run lm-eval → report.

This module only sequences the phases and reports on them; `taskdir` makes the user's task
folder safe to run from any working directory, `harness` runs lm-eval, `report` writes the
artifact. The checks that need no model come first, so a bad task name or a missing data file
fails in about a second instead of after the model has loaded.
"""

from __future__ import annotations

import time
from typing import Any

from cairn.errors import StageError
from cairn.stages.base import Context, InputArtifact, Inputs
from cairn.stages.evaluate import harness, report, taskdir
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
    anchored = f"; anchored data paths in {len(tasks.rewritten)} YAML(s)" if tasks.rewritten else ""
    ctx.log(
        f"evaluate: {len(tasks.leaves)} task(s) from {tasks_input.name or tasks_input.path}: "
        f"{', '.join(tasks.leaves)}{anchored}"
    )
    if config.add_bos_token and "loglikelihood_rolling" in tasks.output_types.values():
        # Measured with lm-eval 0.4.13: rolling windows already start from one BOS, and an
        # encoder that adds another makes the score include log p(BOS | BOS).
        ctx.log(
            "evaluate: warning: add_bos_token is true, so lm-eval also scores a second BOS in "
            "each perplexity document; leave it unset for perplexity tasks"
        )
    ctx.check_cancelled()

    results, facts = harness.evaluate(
        config, model.path, tasks.manager, list(tasks.output_types.values()), ctx
    )
    ctx.check_cancelled()

    written = report.write(
        out, config, model, tasks_input, tasks, results, facts, time.monotonic() - started
    )
    from lm_eval.utils import make_table  # the table `lm_eval run` prints, for the step log

    ctx.log("evaluate: scores\n" + make_table(results))
    metrics = written["metrics"]
    ctx.progress(1, 1, "done")
    ctx.log(
        f"evaluate: wrote report.json and {len(results.get('samples') or {})} sample file(s) "
        f"in {written['elapsed_s']:.1f}s"
    )
    return {"model_digest": model.digest, "metrics": metrics}


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
