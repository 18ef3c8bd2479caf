"""LoRA for the post-training kinds: the peft config their TRL trainer gets, the check of the
target layers before Ray Train starts, the two things a LoRA run saves, and what they record.

With `lora` set (`config.LoraSettings`), TRL wraps the input model in peft's `PeftModel` (the
`peft_config` of its trainers): every weight of the input model is frozen and only the low-rank
updates train. dpo's reference is then the same model with the adapter switched off (TRL does
that when it is given no reference model), which is the input model itself, so the first dpo
loss is still exactly ln 2.

At the end rank 0 saves (`save`) the adapter (peft's `save_pretrained`: adapter_config.json and
adapter_model.safetensors), which becomes the step's `adapter` output, and the input model with
the adapter merged into its weights (`merge_and_unload`), which becomes the `model` output in
the plain layout a full fine-tune writes: evaluate, serve, release and `cairn audit` read it as
any model. The engine records the adapter among the merged model's parents (the spec's
`output_parents`), so the lineage reads base + adapter → merged model, and the release carries
all three.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cairn.errors import StageError
from cairn.stages.posttrain.config import LoraSettings

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MERGE = "peft merge_and_unload"
# The linear layer types peft puts an update on (transformers' GPT-2 family uses Conv1D).
_LAYER_TYPES = ("Linear", "Conv1D")


def peft_config(settings: LoraSettings) -> Any:
    """The `peft.LoraConfig` of `settings`, for a causal LM."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def check_targets(path: Path, settings: LoraSettings, kind: str) -> None:
    """Refuse target_modules that name no layer of the model at `path`, before Ray Train starts
    (peft would fail in every worker). The model is built on the meta device: its layers, no
    weights, in a fraction of a second."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = [n for n, _ in model.named_modules() if n]
    layers = sorted(
        {
            n.rsplit(".", 1)[-1]
            for n, m in model.named_modules()
            if type(m).__name__ in _LAYER_TYPES and m is not model.get_output_embeddings()
        }
    )
    arch = type(model).__name__
    if settings.target_modules == "all-linear":
        if not layers:
            raise StageError(
                f"{kind}: config.lora.target_modules is 'all-linear', but the model ({arch}) has "
                "no linear layer besides its output head; fix: use full fine-tuning (remove lora)"
            )
        return
    missing = [
        t for t in settings.target_modules if not any(n == t or n.endswith("." + t) for n in names)
    ]
    if missing:
        raise StageError(
            f"{kind}: config.lora.target_modules names {', '.join(missing)}, which the model "
            f"({arch}, {path / 'config.json'}) has no layer called; its linear layers are "
            f"{', '.join(layers) or '(none)'}; fix: target some of those, or write "
            "target_modules: all-linear"
        )


def trainable(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters of the trainer's (peft) model, total counting the adapter."""
    counted: tuple[int, int] = model.get_nb_trainable_parameters()
    return counted


def save(model: Any, adapter_out: Path) -> Any:
    """Save the adapter of peft model `model` to `adapter_out` (its two files only) and return
    the input model with the adapter merged into its weights (a plain transformers model)."""
    with tempfile.TemporaryDirectory(prefix="cairn-adapter-") as tmp:
        model.save_pretrained(tmp)
        adapter_out.mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            shutil.copy2(Path(tmp) / name, adapter_out / name)
    # peft records where the base was loaded from: a path in this worker's copy of the store,
    # which would make the same training a different artifact on another machine. The adapter's
    # metadata names the base by digest instead, and PeftModel.from_pretrained(base, dir) is
    # handed the base: it never reads this field.
    config = adapter_out / ADAPTER_FILES[0]
    data = json.loads(config.read_text())
    data["base_model_name_or_path"] = None
    # peft holds the layer names as a set and writes them in the set's order, which changes
    # with each process's hash seed: sorted, the same training is the same artifact (found by
    # `cairn reproduce`).
    for key in ("target_modules", "exclude_modules"):
        if isinstance(data.get(key), list):
            data[key] = sorted(data[key])
    config.write_text(json.dumps(data, indent=2, sort_keys=True))
    return model.merge_and_unload()


def describe(settings: LoraSettings) -> str:
    targets = settings.target_modules
    shown = targets if isinstance(targets, str) else ", ".join(targets)
    return f"r={settings.r}, alpha={settings.alpha:g}, dropout={settings.dropout:g} on {shown}"


def metadata(
    settings: LoraSettings,
    counts: dict[str, int],
    base: dict[str, str],
    adapter_digest: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the merged model's and the adapter's metadata add: the settings, the parameter
    counts, the base (`{digest, name}` of the input model) and, for the model, how it was made."""
    settings_data = settings.model_dump(mode="json")
    model = {
        "trainable_parameters": counts["trainable_parameters"],
        "lora": {
            **settings_data,
            "base": base["digest"],
            "adapter": adapter_digest,
            "merge": MERGE,
        },
    }
    adapter = {
        **counts,
        "base_model": base,
        "lora": settings_data,
        "files": list(ADAPTER_FILES),
    }
    return model, adapter
