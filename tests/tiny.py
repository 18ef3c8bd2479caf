"""A tiny Hugging Face model directory built in a second, for tests of the stages that take a model.

It is laid out as the `pretrain` stage's output (Llama weights in safetensors, the curate stage's
byte-level BPE tokenizer with its special and chat-role tokens) so post-training, evaluation,
serving and release tests run on what they would see in a workflow, without training first.
head_dim is 64: vLLM's CPU build accepts it (16 fails).
"""

from __future__ import annotations

import json
from pathlib import Path

from cairn.stages.curate import tokenizer as curate_tokenizer

REPO = Path(__file__).resolve().parents[1]
PLAYS = REPO / "workflows" / "data" / "shakespeare" / "plays.jsonl"


def corpus_texts(limit: int = 300) -> list[str]:
    """Real text (Shakespeare scenes, public domain) to train a tokenizer on."""
    texts = []
    with PLAYS.open() as f:
        for line in f:
            texts.append(" ".join(json.loads(line)["text"].split()))
            if len(texts) >= limit:
                break
    return texts


def make_tiny_model(
    out: Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 1,
    seed: int = 0,
) -> Path:
    """A randomly initialised LlamaForCausalLM + tokenizer saved under `out`; returns `out`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = curate_tokenizer.train(corpus_texts(), vocab_size)
    curate_tokenizer.save(tok, out)
    hf_tok = AutoTokenizer.from_pretrained(out)
    config = LlamaConfig(
        vocab_size=-(-len(hf_tok) // 64) * 64,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=256,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    return out
