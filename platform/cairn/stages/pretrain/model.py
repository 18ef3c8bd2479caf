"""The pretrained model's architecture: a Llama-style `transformers` model built from a config.

Built from `LlamaConfig` rather than downloaded, so pretraining works offline and the output is a
standard Hugging Face directory that `AutoModelForCausalLM`, vLLM and lm-eval load without Cairn.
This module also turns a training checkpoint back into that directory (`export_model`), and
reads a checkpoint's tensor files without letting them run code (`load_tensors`).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cairn.errors import StageError

if TYPE_CHECKING:
    from cairn.stages.pretrain.config import PretrainConfig
    from cairn.stages.pretrain.data import DatasetInfo

# Embedding rows are padded to a multiple of this: faster matmuls, and room for a few more
# special tokens during post-training without resizing.
VOCAB_MULTIPLE = 64

ARCHITECTURE = "LlamaForCausalLM"
MODEL_STATE_FILE = "model.pt"


def padded_vocab_size(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return -(-vocab_size // multiple) * multiple


def llama_config(config: PretrainConfig, data: DatasetInfo) -> LlamaConfig:
    """The `transformers` config for `config`'s shape on a dataset with `data`'s vocabulary."""
    return LlamaConfig(
        vocab_size=padded_vocab_size(data.vocab_size),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size or 4 * config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads or config.num_heads,
        max_position_embeddings=data.seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        bos_token_id=data.bos_token_id,
        eos_token_id=data.eos_token_id,
        pad_token_id=data.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=config.init_std,
        # Cairn's serving and eval stages read generation settings from the model directory.
        use_cache=True,
    )


def build_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model; the same seed gives the same weights on every worker."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, tied embeddings counted once (`parameters()` deduplicates)."""
    return sum(p.numel() for p in model.parameters())


def export_model(
    checkpoint_dir: Path, config: LlamaConfig, out_dir: Path, start_over: Path
) -> LlamaForCausalLM:
    """Write the model of a training checkpoint as a Hugging Face directory under `out_dir`.

    Produces config.json, generation_config.json and model.safetensors (transformers 5 always
    writes safetensors). Weights are stored in float32, the precision they were trained in.
    `start_over` is the folder of the step's checkpoints, named in errors' fixes.
    """
    model = LlamaForCausalLM(config)
    state = load_tensors(Path(checkpoint_dir) / MODEL_STATE_FILE, "cpu", start_over)
    model.load_state_dict(state)
    model.eval()
    model.save_pretrained(out_dir)
    return model


def load_tensors(path: Path, map_location: Any, start_over: Path) -> Any:
    """A `torch.save`d state dict of a training checkpoint, read with `weights_only=True`.

    torch's restricted unpickler builds tensors, numbers, strings and containers and refuses
    anything else, so a doctored checkpoint file cannot run code. Its failures become a message
    naming the file; `start_over` is the folder of the step's checkpoints, for the fix.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as e:
        raise _unreadable(path, "is missing", start_over) from e
    except pickle.UnpicklingError as e:  # what the restricted unpickler raises on other objects
        # Only what was refused: the rest of torch's message explains how to allow it.
        refused = re.search(r"Unsupported global: GLOBAL [\w.]+", str(e))
        problem = (
            "holds objects other than tensors and plain values, which Cairn does not unpickle "
            f"(unpickling them could run code){': ' + refused.group(0) if refused else ''}"
        )
        raise _unreadable(path, problem, start_over) from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:  # truncated, or not a torch file
        first = str(e).strip().splitlines()
        problem = f"is not a readable torch file ({first[0] if first else repr(e)})"
        raise _unreadable(path, problem, start_over) from e


def _unreadable(path: Path, problem: str, start_over: Path) -> StageError:
    return StageError(
        f"pretrain: checkpoint file {path} {problem}; fix: delete the step's checkpoints "
        f"({start_over}) and re-run the step to train it from step 0 (or restore the "
        "checkpoint folder from a copy)"
    )
