"""Tests of `cairn.stages.pretrain.flops`: the FLOPs formula against PyTorch's FLOP counter, the
peak table's device matching, and the MFU arithmetic.

The formula is checked against `torch.utils.flop_counter.FlopCounterMode` on a real forward +
backward of a tiny `LlamaForCausalLM` built the way the pretrain stage builds it. The model uses
eager attention for this: on CPU, SDPA runs `_scaled_dot_product_flash_attention_for_cpu`, which
has no FLOP formula in torch 2.13, so the counter would see no attention FLOPs at all (measured:
14.8% below the formula for the config below, exactly the attention term).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig

from cairn.stages.pretrain import PretrainConfig
from cairn.stages.pretrain.data import DatasetInfo
from cairn.stages.pretrain.flops import (
    PEAK_FLOPS,
    device_peak,
    flops_per_token,
    mfu,
    parameters_non_embedding,
)
from cairn.stages.pretrain.model import build_model, llama_config


def _llama_config(seq_len: int = 64, **shape: int) -> LlamaConfig:
    data = DatasetInfo(
        root=Path("."),
        seq_len=seq_len,
        vocab_size=300,  # padded to 320 by llama_config
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        train_shards=(),
        validation_shards=(),
        train_sequences=0,
        validation_sequences=0,
    )
    # Grouped-query attention (kv heads < heads) so that the k/v width is checked too.
    defaults = dict(hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2, intermediate_size=96)
    return llama_config(PretrainConfig(**(defaults | shape)), data)


@pytest.mark.parametrize("seq_len", [16, 64])
def test_flops_per_token_matches_torch_flop_counter(seq_len: int) -> None:
    config = _llama_config(seq_len)
    config._attn_implementation = "eager"  # see the module docstring
    model = build_model(config, seed=0)
    batch = 2
    ids = torch.randint(0, config.vocab_size, (batch, seq_len))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids, labels=ids).loss.backward()
    counted = counter.get_total_flops()
    # Both count exactly the same matmuls, so they agree exactly here (torch 2.13,
    # transformers 5.19). The tolerance leaves room for a small matmul outside the model's
    # weights and attention (e.g. a RoPE outer product, head_dim/flops_per_token ≈ 5e-5 of the
    # total) while every term of the formula is far larger than it: the attention term is
    # 4-15% of the total at these lengths, the k/v GQA width 3.7%, the LM head 23%.
    assert counted == pytest.approx(flops_per_token(config, seq_len) * batch * seq_len, rel=1e-3)


def test_flops_per_token_by_hand_for_a_7b_shape() -> None:
    # Llama-2-7B's shape: d=4096, 32 layers, 32 heads, MLP 11008, vocab 32000, 4096 context.
    config = _llama_config(
        seq_len=4096, hidden_size=4096, num_heads=32, num_kv_heads=32, num_layers=32,
        intermediate_size=11008,
    )  # fmt: skip
    config.vocab_size = 32000
    d, layers, mlp, vocab, seq = 4096, 32, 11008, 32000, 4096
    weights = layers * (4 * d * d + 3 * d * mlp) + d * vocab  # matmul weights, LM head included
    attention = 12 * layers * d * seq  # PaLM's 12·L·H·Q·T, the full T×T square
    assert flops_per_token(config, seq) == 6 * weights + attention == 46_084_915_200


def test_parameters_non_embedding_counts_the_model_without_its_embedding() -> None:
    config = _llama_config()
    model = build_model(config, seed=0)
    # The LM head is tied to the embedding, so this removes both.
    expected = sum(p.numel() for p in model.parameters()) - model.model.embed_tokens.weight.numel()
    assert parameters_non_embedding(config) == expected


@pytest.mark.parametrize(
    ("name", "row"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA B200", "B200"),
    ],
)
def test_device_peak_matches_cuda_device_names(name: str, row: str) -> None:
    bf16 = device_peak(name, "bfloat16")
    fp32 = device_peak(name, "float32")
    assert bf16 is not None and fp32 is not None
    assert bf16[0] == PEAK_FLOPS[row].bfloat16 * 1e12
    assert fp32[0] == PEAK_FLOPS[row].float32 * 1e12
    assert bf16[1].startswith(f"{row}: ")


@pytest.mark.parametrize(
    "name",
    [
        "cpu",
        "",
        "NVIDIA H100 NVL",  # other clocks than SXM/PCIe, no row
        "NVIDIA H200 NVL",
        "NVIDIA GH200 480GB",  # contains "H200" but is not one
        "NVIDIA GB200",
        "NVIDIA A10G",  # AWS part without a public NVIDIA datasheet
        "NVIDIA A10",
        "NVIDIA L40",
        "NVIDIA H800",
        "Tesla T4",
    ],
)
def test_device_peak_is_none_for_unknown_devices(name: str) -> None:
    assert device_peak(name, "bfloat16") is None


def test_peak_table_figures_are_dense_and_sourced() -> None:
    # The datasheet's 1,979 TFLOPS is with 2:4 sparsity; dense is half.
    h100 = device_peak("NVIDIA H100 80GB HBM3", "bf16")
    assert h100 is not None and h100[0] == 989.5e12
    for key, peak in PEAK_FLOPS.items():
        assert "https://" in peak.source, key
        assert 0 < peak.float32 < peak.bfloat16, key
    with pytest.raises(ValueError, match="dtype"):
        device_peak("NVIDIA H100 80GB HBM3", "tf32")


def test_mfu_by_hand() -> None:
    # 20k tokens/s per device × 1e10 FLOPs per token = 2e14 FLOP/s, of a 1e15 peak.
    assert mfu(20_000, 1e10, 1e15) == pytest.approx(0.2)
    # An H100 SXM in bf16 training a 7B shape at 3,000 tokens/s per device: 14.0%.
    per_token = 46_084_915_200
    assert mfu(3_000, per_token, 989.5e12) == pytest.approx(0.13972, abs=1e-5)
    with pytest.raises(ValueError, match="peak_flops"):
        mfu(1.0, 1.0, 0.0)
