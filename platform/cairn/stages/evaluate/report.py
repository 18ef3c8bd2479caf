"""The `eval_report` artifact: scores with everything needed to trust and repeat them.

    report.json          model digest, scores (+ stderr), harness and library versions, every
                         task's YAML and data files with sha256, the task configs as lm-eval
                         resolved them, seeds and model settings, and an `lm_eval` command line
                         that reproduces the numbers by hand, and `contamination`: whether
                         each task's data was checked against the model's training data, by
                         which datasets, how many training documents overlapped it, and
                         whether `allow_contaminated` let unchecked tasks through (gate.py),
                         and `task_code`: whether the step trusted the folder's Python
                         (`trust_task_code`), which Python files lm-eval ran, with sha256, and
                         which YAML lines named them (taskcode.py)
    samples/<task>.jsonl one line per document: the doc, the prompt/arguments, the target, the
                         raw and filtered model responses and each metric's value
    tasks/               the `tasks` input as `lm_eval run` reads it from there: byte for byte,
                         but for data paths that a YAML in a subfolder names relative to its own
                         folder, rewritten relative to tasks/ (taskcopy.py; each one listed with
                         the file's sha256 before and after, beside the input's digests)

report.json is the same, byte for byte, for the same evaluation (its digest is the artifact's):
it holds no time, no memory address (stable.py) and no path of the machine that ran it. The model
is named by digest; the reproduce command expects it as `model/` beside `tasks/`.

Metric names for the engine (and MLflow) are `<task>/<metric>`, with `/<filter>` added only
where a task scores one metric through several filter pipelines. MLflow allows no commas, so
lm-eval's `acc,none` keys are not used as they are.
"""

from __future__ import annotations

import json
import platform
import re
import shlex
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from cairn.stage import InputArtifact
from cairn.stages.evaluate import harness, stable, taskcopy, taskdir, taskfolder
from cairn.stages.evaluate.config import BOOTSTRAP_ITERS, EvaluateConfig

FORMAT = 1
HARNESS = "lm-evaluation-harness"
PACKAGES = ("lm_eval", "torch", "transformers", "datasets", "tokenizers", "numpy")
RESOLVED_KEYS = ("output_type", "num_fewshot", "metric_list", "filter_list", "generation_kwargs")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow accepts in a metric name
# Where the reproduce command, run from the report's tasks/, expects the model: not where the
# stage read it, which is a path of the machine that ran it and would change the report's digest.
MODEL_DIR = "../model"


def clear(out: Path) -> None:
    """Remove what an earlier attempt of this step left, so no stale sample file survives."""
    for name in ("samples", "tasks"):
        if (out / name).exists():
            shutil.rmtree(out / name)
    (out / "report.json").unlink(missing_ok=True)


def scores(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{task: {metric or metric/filter: {value, stderr, filter}}} from lm-eval's results."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, values in results["results"].items():
        pairs = [k.split(",", 1) for k in values if "," in k and "_stderr," not in k]
        filters_of: dict[str, set[str]] = {}
        for metric, filt in pairs:
            filters_of.setdefault(metric, set()).add(filt)
        for metric, filt in pairs:
            value = values[f"{metric},{filt}"]
            if not isinstance(value, int | float):
                continue
            stderr = values.get(f"{metric}_stderr,{filt}")
            key = metric if len(filters_of[metric]) == 1 else f"{metric}/{filt}"
            out.setdefault(task, {})[key] = {
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, int | float) else None,
                "filter": filt,
            }
    return out


def flat_metrics(table: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float]:
    """`<task>/<metric>` -> value, as the engine logs them."""
    return {
        _UNSAFE.sub("_", f"{task}/{metric}"): entry["value"]
        for task, metrics in table.items()
        for metric, entry in metrics.items()
    }


def write(
    out: Path,
    config: EvaluateConfig,
    model: InputArtifact,
    tasks_input: InputArtifact,
    tasks: taskdir.TaskDir,
    results: dict[str, Any],
    facts: dict[str, Any],
    contamination: dict[str, Any],
    task_code: dict[str, Any],
) -> dict[str, Any]:
    """Write report.json, samples/ and tasks/ under `out`; returns the report."""
    for_cli = taskcopy.write(tasks.source, out / "tasks", tasks.configs)
    samples = results.get("samples") or {}
    (out / "samples").mkdir(exist_ok=True)

    def jsonable(value: Any) -> Any:
        return stable.jsonable(value, tasks.root, tasks.files)

    for task, rows in samples.items():
        with open(out / "samples" / f"{task}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, default=jsonable, ensure_ascii=False) + "\n")
    table = scores(results)
    report = {
        "format": FORMAT,
        "model": {
            "digest": model.digest,
            "name": model.name or model.path.name,
            **{k: facts[k] for k in ("parameters", "model_dtype", "max_length")},
        },
        "harness": {"name": HARNESS, "package": "lm_eval", "version": _version("lm_eval")},
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "settings": _settings(config, facts),
        "tasks_input": {
            "digest": tasks_input.digest,
            "name": tasks_input.name or tasks_input.path.name,
            "files": tasks.files,
            "anchored_paths": tasks.rewritten,
            "rewritten_for_cli": for_cli,
        },
        "scores": table,
        "metrics": flat_metrics(table),
        "tasks": {task: _task(task, results, tasks) for task in results.get("configs", {})},
        "groups": results.get("group_subtasks", {}),
        "contamination": contamination,
        "task_code": task_code,
        "reproduce": reproduce(config, model, facts, for_cli),
    }
    (out / "report.json").write_text(
        json.dumps(report, indent=2, default=jsonable, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    return report


def reproduce(
    config: EvaluateConfig,
    model: InputArtifact,
    facts: dict[str, Any],
    for_cli: dict[str, Any],
) -> dict[str, Any]:
    """The `lm_eval run` invocation that computes the same numbers, run from tasks/ with the
    model at MODEL_DIR."""
    margs = ",".join(f"{k}={v}" for k, v in harness.model_args(config, Path(MODEL_DIR)).items())
    argv = ["lm_eval", "run", "--model", "hf", "--model_args", margs, "--device", config.device]
    argv += ["--include_path", ".", "--tasks", ",".join(config.tasks)]
    argv += ["--batch_size", str(config.batch_size), "--seed", str(config.seed)]
    if config.num_fewshot is not None:
        argv += ["--num_fewshot", str(config.num_fewshot)]
    if config.limit is not None:
        argv += ["--limit", str(config.limit)]
    argv += ["--log_samples", "--output_path", "lm_eval_out"]
    env = {**harness.OFFLINE, "OMP_NUM_THREADS": str(facts["torch_num_threads"])}
    env.pop("TOKENIZERS_PARALLELISM")  # lm_eval run sets it itself
    notes = [
        "OMP_NUM_THREADS is the stage's torch thread count: CPU kernels may order sums by "
        "thread, so another count can move a score in its last bits",
    ]
    if for_cli:
        notes.append(
            "tasks/ differs from the tasks input only in the data paths listed under "
            "tasks_input.rewritten_for_cli: lm-eval resolves them from its working directory, "
            "the stage from the YAML's folder; both name the same files"
        )
    return {
        "cwd": "tasks/ of this report (relative data paths are resolved from there)",
        "needs": {
            "tasks/": "this report's tasks/ folder, as the working directory",
            "model/": f"beside tasks/ ({MODEL_DIR} from it): the model directory with digest "
            f"{model.digest} (a copy or a link)",
        },
        "env": env,
        "argv": argv,
        "command": " ".join(f"{k}={v}" for k, v in env.items()) + " " + shlex.join(argv),
        "notes": notes,
    }


def _settings(config: EvaluateConfig, facts: dict[str, Any]) -> dict:
    seed = config.seed
    return {
        "backend": "hf",
        "device": config.device,
        "dtype": config.dtype,
        "model_args": harness.model_args(config, Path(MODEL_DIR)),  # as the reproduce command
        "batch_size": config.batch_size,
        "limit": config.limit,
        "num_fewshot": config.num_fewshot,
        "bootstrap_iters": BOOTSTRAP_ITERS,
        "seeds": {"random": seed, "numpy": seed, "torch": seed, "fewshot": seed},
        "max_length": facts["max_length"],
        "bos": {
            "add_bos_token": config.add_bos_token,
            "contexts_start_with_bos": facts["contexts_start_with_bos"],
            "rolling_prefix_token": [facts["prefix_token"], facts["prefix_token_id"]],
            "bos_token": facts["bos_token"],
            "eos_token": facts["eos_token"],
            "pad_token": facts["pad_token"],
        },
        "torch_num_threads": facts["torch_num_threads"],
        "offline": harness.OFFLINE,
        "chat_template": None,
        "trust_task_code": config.trust_task_code,
    }


def _task(task: str, results: dict[str, Any], tasks: taskdir.TaskDir) -> dict[str, Any]:
    config = _relative(results["configs"][task], tasks)
    kwargs = config.get("dataset_kwargs") or {}
    if isinstance(kwargs, dict) and kwargs.get("cache_dir") == str(tasks.cache_dir):
        kwargs.pop("cache_dir")  # the stage's own addition (see taskdir._anchor)
    data = []
    for path in taskfolder.data_paths(results["configs"][task]):
        for file in taskfolder.expand(path):
            rel = tasks.relative(file)
            inside = rel in tasks.files
            entry = {"path": rel, "sha256": tasks.files[rel] if inside else taskfolder.sha256(file)}
            data.append(entry if inside else {**entry, "outside_tasks_input": True})
    chain = tasks.leaves.get(task, [])
    return {
        "yaml": [{"path": p, "sha256": tasks.files.get(p)} for p in chain],
        "data": data,
        "version": results.get("versions", {}).get(task),
        "n_samples": results.get("n-samples", {}).get(task),
        "resolved": {k: config.get(k) for k in RESOLVED_KEYS},
        "config": config,
    }


def _relative(value: Any, tasks: taskdir.TaskDir) -> Any:
    """Replace paths into the scratch copy by paths relative to the task folder, and memory
    addresses in the reprs lm-eval wrote for functions it could not show (stable.REPR)."""
    if isinstance(value, str):
        prefix = str(tasks.root) + "/"
        value = value.replace(prefix, "") if prefix in value else value
        return stable.REPR.sub(r"<\1>", value)
    if isinstance(value, dict):
        return {k: _relative(v, tasks) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_relative(v, tasks) for v in value]
    return value


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
