"""The pretrained model's architecture: a Llama-style `transformers` model built from a config.

Built from `LlamaConfig` rather than downloaded, so pretraining works offline and the output is a
standard Hugging Face directory that `AutoModelForCausalLM`, vLLM and lm-eval load without Cairn.
This module also turns a training checkpoint back into that directory (`export_model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import LlamaConfig, LlamaForCausalLM

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


def export_model(checkpoint_dir: Path, config: LlamaConfig, out_dir: Path) -> LlamaForCausalLM:
    """Write the model of a training checkpoint as a Hugging Face directory under `out_dir`.

    Produces config.json, generation_config.json and model.safetensors (transformers 5 always
    writes safetensors). Weights are stored in float32, the precision they were trained in.
    """
    model = LlamaForCausalLM(config)
    state = torch.load(Path(checkpoint_dir) / MODEL_STATE_FILE, map_location="cpu")
    model.load_state_dict(state)
    model.eval()
    model.save_pretrained(out_dir)
    return model
