"""Running lm-evaluation-harness in-process, the way `lm_eval run` would on the same inputs.

The stage calls `lm_eval.simple_evaluate` with the arguments the CLI derives from its flags
(`hf` model from the local directory, the same seeds, batch size, limit and bootstrap count), so
`report.json`'s command line reproduces the scores exactly. The one addition is a thin subclass
of lm-eval's HF model that counts forward passes to report progress and honour cancellation; it
changes no computation.

Everything runs offline: the model and the data are local, and HF_HUB_OFFLINE makes any stray
Hub lookup (lm-eval asks the Hub for the model's revision sha) fail at once instead of waiting on
a network that is not there.

A task folder is data, and lm-eval renders its templates with a plain Jinja environment, in which
a template reaches Python itself (`{{ cycler.__init__.__globals__.os.system(...) }}`). They are
rendered in Jinja's sandbox instead (`sandbox_templates`), which renders every ordinary template
the same and refuses that. The Python a task names with `!function` is `taskcode`'s concern.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from cairn.errors import StageError
from cairn.stage import Context
from cairn.stages.evaluate.config import BOOTSTRAP_ITERS, EvaluateConfig

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# lm-eval's HF model loads these in preference to pytorch_model.bin, a pickle that can run code
# when loaded; a model input without them is refused (check_model).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")  # lm-eval's order
# Which harness method serves each task output type, in the order lm-eval runs them.
REQUEST_TYPE = {
    "loglikelihood": "loglikelihood",
    "multiple_choice": "loglikelihood",
    "generate_until": "generate_until",
    "loglikelihood_rolling": "loglikelihood_rolling",
}


def check_model(model_dir: Path, config: EvaluateConfig) -> dict[str, Any]:
    """Fail early, with a fix, on a model directory lm-eval could not load; returns config.json."""
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise StageError(
            f"model input {model_dir} has no config.json, so it is not a Hugging Face model "
            "directory; fix: pass the `model` output of a pretrain/sft/dpo step, or a folder "
            "written by model.save_pretrained(DIR)"
        )
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in model_dir.glob(pattern))
        if pickled:
            raise StageError(
                f"model input {model_dir} holds its weights only as {pickled[0]}, a pickle, "
                "which can run code when loaded; evaluate loads model weights from safetensors "
                "only; fix: where you trust the model's origin, convert it with "
                "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir) (transformers "
                "writes model.safetensors)"
            )
        raise StageError(
            f"model input {model_dir} has no weights ({', '.join(WEIGHT_FILES)}); fix: save the "
            "model there with model.save_pretrained(dir)"
        )
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise StageError(
            f"model input {model_dir} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "evaluate loads the tokenizer from the model directory; fix: save it there with "
            "tokenizer.save_pretrained(DIR) (Cairn's pretrain stage does this)"
        )
    model_config = json.loads(config_file.read_text(encoding="utf-8"))
    limit = next((model_config[k] for k in POSITION_KEYS if model_config.get(k)), None)
    if config.max_length is not None and limit is not None and config.max_length > limit:
        raise StageError(
            f"max_length {config.max_length} exceeds the {limit} positions the model was built "
            f"for ({config_file}); fix: set max_length to at most {limit}, or leave it unset to "
            "use the model's own limit"
        )
    return model_config


def model_args(config: EvaluateConfig, model_dir: Path) -> dict[str, Any]:
    """lm-eval's `--model_args` for the `hf` backend: only what differs from its defaults."""
    args: dict[str, Any] = {"pretrained": str(model_dir), "dtype": config.dtype}
    if config.max_length is not None:
        args["max_length"] = config.max_length
    if config.add_bos_token is not None:
        args["add_bos_token"] = config.add_bos_token
    return args


def evaluate(
    config: EvaluateConfig,
    model_dir: Path,
    task_manager: Any,
    output_types: list[str],
    ctx: Context,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the tasks; returns lm-eval's results dict and facts about the loaded model."""
    go_offline()
    import lm_eval

    ctx.progress(0, None, "loading model")
    lm = _reporting_lm_class().create_from_arg_obj(
        model_args(config, model_dir), {"batch_size": config.batch_size, "device": config.device}
    )
    phases = [t for t in dict.fromkeys(REQUEST_TYPE.values()) if t in _request_types(output_types)]
    lm.cairn_attach(ctx, phases, config.batch_size)
    sandbox_templates()
    from jinja2.exceptions import SecurityError

    try:
        results = _simple_evaluate(lm_eval, lm, config, model_dir, task_manager)
    except SecurityError as e:
        raise StageError(
            f"a Jinja template in the tasks input reaches for Python objects ({e}); task "
            "templates are rendered in Jinja's sandbox, which refuses that; fix: use the doc's "
            "fields and Jinja filters in doc_to_text/doc_to_target/doc_to_choice, or a "
            "!function in a Python file with trust_task_code: true"
        ) from e
    if results is None:  # only non-zero ranks of a multi-process run get None
        raise RuntimeError("lm_eval.simple_evaluate returned no results on rank 0")
    return results, _model_facts(lm)


def _simple_evaluate(
    lm_eval: Any, lm: Any, config: EvaluateConfig, model_dir: Path, task_manager: Any
) -> dict[str, Any] | None:
    """`lm_eval.simple_evaluate` with the arguments `lm_eval run` derives from the report's
    command line (report.reproduce)."""
    seed = config.seed
    return lm_eval.simple_evaluate(  # type: ignore[no-any-return]
        model=lm,
        model_args=model_args(config, model_dir),  # only recorded in results["config"]
        tasks=list(config.tasks),
        num_fewshot=config.num_fewshot,
        batch_size=config.batch_size,
        device=config.device,
        limit=config.limit,
        bootstrap_iters=BOOTSTRAP_ITERS,
        log_samples=True,
        task_manager=task_manager,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )


def sandbox_templates() -> None:
    """Make lm-eval render task templates in Jinja's sandbox (see the module docstring).

    lm-eval keeps one module-level environment (`lm_eval.utils.env`) that `apply_template` reads
    on every call; it is replaced once per process by a sandboxed one with the same settings and
    filters, which every step of the process then shares."""
    import lm_eval.utils
    from jinja2.sandbox import SandboxedEnvironment

    current = lm_eval.utils.env
    if isinstance(current, SandboxedEnvironment):
        return
    sandbox = SandboxedEnvironment(
        loader=current.loader,
        undefined=current.undefined,
        keep_trailing_newline=current.keep_trailing_newline,
    )
    sandbox.filters.update(current.filters)
    lm_eval.utils.env = sandbox


def go_offline() -> None:
    """Make every Hugging Face library offline, even one imported before this step ran.

    The libraries read these variables once, at import; another step in the same process may
    have imported them already, so their module-level switches are set too.
    """
    os.environ.update(OFFLINE)
    switches = {
        "huggingface_hub.constants": ("HF_HUB_OFFLINE",),
        "datasets.config": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"),
    }
    for module, names in switches.items():
        if (loaded := sys.modules.get(module)) is not None:
            for name in names:
                setattr(loaded, name, True)


def _request_types(output_types: list[str]) -> set[str]:
    return {REQUEST_TYPE.get(t, t) for t in output_types}


def _model_facts(lm: Any) -> dict[str, Any]:
    """What the harness resolved about the model: needed to read (and repeat) the scores."""
    import torch

    tok = lm.tokenizer
    probe = lm.tok_encode("a")  # how lm-eval itself encodes a context
    return {
        "max_length": lm.max_length,
        "prefix_token_id": lm.prefix_token_id,
        "prefix_token": tok.convert_ids_to_tokens(lm.prefix_token_id),
        "contexts_start_with_bos": bool(
            tok.bos_token_id is not None and probe[:1] == [tok.bos_token_id]
        ),
        "bos_token": [tok.bos_token, tok.bos_token_id],
        "eos_token": [tok.eos_token, tok.eos_token_id],
        "pad_token": [tok.pad_token, tok.pad_token_id],
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "model_dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
        "torch_num_threads": torch.get_num_threads(),
    }


def _reporting_lm_class() -> Any:
    """lm-eval's HF model, counting forward passes for `ctx.progress` and cancellation.

    Built in a function: subclassing needs the HFLM import, which pulls in torch and transformers.
    """
    from lm_eval.models.huggingface import HFLM

    class ReportingHFLM(HFLM):  # type: ignore[misc]
        def cairn_attach(self, ctx: Context, phases: list[str], batch_size: int) -> None:
            self._ctx, self._phases, self._bs = ctx, phases, batch_size
            self._phase, self._calls, self._expected = "", 0, 1

        def _start(self, phase: str, n_requests: int) -> None:
            self._ctx.check_cancelled()
            self._phase, self._calls = phase, 0
            self._expected = max(1, math.ceil(n_requests / self._bs))
            self._ctx.log(f"evaluate: {phase}: {n_requests} requests")
            self._report()

        def _report(self) -> None:
            done = self._phases.index(self._phase) if self._phase in self._phases else 0
            frac = min(self._calls / self._expected, 0.99)
            self._ctx.progress(done + frac, len(self._phases), f"{self._phase} batch {self._calls}")

        def _tick(self) -> None:
            self._ctx.check_cancelled()
            self._calls += 1
            self._report()

        def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
            self._start("loglikelihood", len(requests))
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

        def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> Any:
            self._start("loglikelihood_rolling", len(requests))
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

        def generate_until(self, requests: Any, disable_tqdm: bool = False) -> Any:
            self._start("generate_until", len(requests))
            return super().generate_until(requests, disable_tqdm=disable_tqdm)

        def _model_call(self, inps: Any, attn_mask: Any = None, labels: Any = None) -> Any:
            self._tick()
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

        def _model_generate(self, context: Any, max_length: int, stop: Any, **kwargs: Any) -> Any:
            self._tick()
            return super()._model_generate(context, max_length, stop, **kwargs)

    return ReportingHFLM
