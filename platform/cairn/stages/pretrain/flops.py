"""Training FLOPs per token and model FLOPs utilisation (MFU) for Cairn's Llama models.

Tokens per second says how fast one run went; MFU says how much of the accelerator it used, so
runs of different model sizes on different hardware can be compared. MFU is

    tokens/s per device × training FLOPs per token / peak FLOP/s of the device

with the numerator counted from the model's shape (`flops_per_token`), not measured, and the
denominator taken from the vendor's datasheet (`PEAK_FLOPS`).

Conventions (the same as PaLM, Chowdhery et al. 2022, appendix B):
- Every matmul is counted, at 2 FLOPs per multiply-add: the q/k/v/o projections (k and v at
  the grouped-query width), the SwiGLU MLP (gate, up, down), the LM head, and the attention
  score (QKᵀ) and value (PV) matmuls. Embedding lookups, norms, RoPE, softmax and the loss are
  not matmuls and are left out (element-wise work, O(d) per token and layer against the
  matmuls' O(d²); they do not run on the Tensor Cores the peak figures describe).
- Attention is counted over the **full** T×T square although causal masking makes half of it
  unnecessary; that is PaLM's 12·L·H·Q·T term, and also what `torch.utils.flop_counter`
  counts for the fused attention kernels, so measured and estimated FLOPs agree.
- Training = 3 × forward (the backward pass computes gradients for both the input and the
  weight of every matmul). Activation recomputation is not counted: this is model FLOPs
  (MFU), not hardware FLOPs (HFU).

Peak figures are dense (no 2:4 sparsity: NVIDIA's datasheets mark the Tensor Core rows "with
sparsity", twice the dense rate, and those are halved here). "float32" is plain FP32 on the CUDA
cores; if `torch.backends.cuda.matmul.allow_tf32` (or `set_float32_matmul_precision("high")`)
is on, float32 matmuls run on the TF32 Tensor Cores and MFU against the FP32 peak can pass 100%.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TERA = 1e12


def _attention_width(config: Any) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dim) of a `LlamaConfig`."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv_heads, int(head_dim)


def _matmul_weights_per_layer(config: Any) -> int:
    """Multiply-adds per token of one decoder layer's weight matmuls (= its matrix entries)."""
    d = int(config.hidden_size)
    heads, kv_heads, head_dim = _attention_width(config)
    attention = d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d
    mlp = 3 * d * int(config.intermediate_size)
    return attention + mlp


def flops_per_token(config: Any, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token of a `LlamaForCausalLM` with `config` on
    sequences of `seq_len` tokens; see the module docstring for what is counted."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    layers = int(config.num_hidden_layers)
    heads, _, head_dim = _attention_width(config)
    weights = layers * _matmul_weights_per_layer(config)
    lm_head = int(config.hidden_size) * int(config.vocab_size)
    # Per token and layer: QKᵀ and PV each cost heads × head_dim × seq_len multiply-adds.
    attention = layers * 2 * heads * head_dim * seq_len
    forward = 2 * (weights + lm_head + attention)
    return float(3 * forward)


def parameters_non_embedding(config: Any) -> int:
    """Parameters of `config`'s model without the token embedding and LM head (Kaplan et al.'s
    N): the decoder layers' matrices and norm weights, plus the final norm. Biases are counted
    when the config enables them."""
    d = int(config.hidden_size)
    heads, kv_heads, head_dim = _attention_width(config)
    per_layer = _matmul_weights_per_layer(config) + 2 * d  # + input and post-attention norms
    if getattr(config, "attention_bias", False):
        per_layer += heads * head_dim + 2 * kv_heads * head_dim + d
    if getattr(config, "mlp_bias", False):
        per_layer += 2 * int(config.intermediate_size) + d
    return int(config.num_hidden_layers) * per_layer + d  # + the final norm


def mfu(tokens_per_s_per_device: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the fraction of `peak_flops` (FLOP/s) that the run used."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    return tokens_per_s_per_device * flops_per_token / peak_flops


@dataclass(frozen=True)
class Peak:
    """Dense peak TFLOP/s of one accelerator, with where the figures come from."""

    bfloat16: float
    float32: float
    source: str


# Keys are matched against torch.cuda.get_device_name() by `device_peak` (see _DEVICE_PATTERNS).
# Tensor Core figures on NVIDIA's datasheets are "with sparsity"; the dense rate is half.
PEAK_FLOPS: dict[str, Peak] = {
    "H100 SXM": Peak(
        bfloat16=1979 / 2,
        float32=67,
        source=(
            "NVIDIA H100 Tensor Core GPU datasheet "
            "(https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet), "
            "H100 SXM column: BFLOAT16 Tensor Core 1,979 teraFLOPS (with sparsity), "
            "FP32 67 teraFLOPS"
        ),
    ),
    "H100 PCIe": Peak(
        bfloat16=1513 / 2,
        float32=51,
        source=(
            "NVIDIA H100 Tensor Core GPU datasheet "
            "(https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet), "
            "H100 PCIe column: BFLOAT16 Tensor Core 1,513 teraFLOPS (with sparsity), "
            "FP32 51 teraFLOPS"
        ),
    ),
    "H200 SXM": Peak(
        bfloat16=1979 / 2,
        float32=67,
        source=(
            "NVIDIA H200 Tensor Core GPU specifications "
            "(https://www.nvidia.com/en-us/data-center/h200/), H200 SXM column: "
            "BFLOAT16 Tensor Core 1,979 TFLOPS (with sparsity), FP32 67 TFLOPS"
        ),
    ),
    "A100": Peak(
        bfloat16=312,
        float32=19.5,
        source=(
            "NVIDIA A100 Tensor Core GPU datasheet (https://www.nvidia.com/content/dam/en-zz/"
            "Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf), "
            "A100 80GB SXM column: BFLOAT16 Tensor Core 312 TFLOPS (624 with sparsity), "
            "FP32 19.5 TFLOPS; the 40GB and PCIe columns give the same figures"
        ),
    ),
    "L4": Peak(
        bfloat16=242 / 2,
        float32=30.3,
        source=(
            "NVIDIA L4 Tensor Core GPU datasheet "
            "(https://nvdam.widen.net/s/rvq98gbwsw/l4-datasheet-2595652): "
            "BFLOAT16 Tensor Core 242 teraFLOPS (with sparsity), FP32 30.3 teraFLOPS"
        ),
    ),
    "L40S": Peak(
        bfloat16=362.05,
        float32=91.6,
        source=(
            "NVIDIA L40S datasheet (https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413): "
            "BFLOAT16 Tensor Core 362.05 TFLOPS (733 with sparsity), FP32 91.6 TFLOPS"
        ),
    ),
    "B200": Peak(
        bfloat16=4500 / 2,
        float32=75,
        source=(
            "NVIDIA HGX platform specifications (https://www.nvidia.com/en-us/data-center/hgx/), "
            "HGX B200, per GPU: FP16/BF16 Tensor Core 4.5 PFLOPS (with sparsity), FP32 75 TFLOPS "
            "(an earlier edition of the page gave 80 TFLOPS FP32)"
        ),
    ),
}

# (pattern, PEAK_FLOPS key), tried in order on the device name. Names as CUDA reports them:
# "NVIDIA H100 80GB HBM3" (SXM5), "NVIDIA H100 PCIe", "NVIDIA H200" (SXM),
# "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA L4", "NVIDIA L40S", "NVIDIA B200".
# Variants with other clocks and no row here must not fall through to a sibling's row: the
# H100/H200 NVL cards, the GH200 superchip (whose name contains "H200"), H800/H20, the A10G
# (an AWS part with no public NVIDIA datasheet; the A10's figures are not its figures) and L40.
_DEVICE_PATTERNS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"\bNVL\b", re.I), None),
    (re.compile(r"\bH100\b.*\b(PCIe|HBM2e)\b", re.I), "H100 PCIe"),
    (re.compile(r"\bH100\b.*\b(SXM\d?|HBM3)\b", re.I), "H100 SXM"),
    (re.compile(r"\bH200\b", re.I), "H200 SXM"),
    (re.compile(r"\bA100\b", re.I), "A100"),
    (re.compile(r"\bL40S\b", re.I), "L40S"),
    (re.compile(r"\bL4\b", re.I), "L4"),
    (re.compile(r"\bB200\b", re.I), "B200"),
)

_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32"}


def device_peak(device_name: str, dtype: str) -> tuple[float, str] | None:
    """Dense peak FLOP/s and its source for a `torch.cuda.get_device_name()` string and a
    training dtype ("bfloat16" or "float32"); None for CPUs and devices without a sourced row."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    for pattern, key in _DEVICE_PATTERNS:
        if pattern.search(device_name):
            if key is None:
                return None
            peak = PEAK_FLOPS[key]
            return getattr(peak, _DTYPES[dtype]) * TERA, f"{key}: {peak.source}"
    return None


__all__ = [
    "PEAK_FLOPS",
    "Peak",
    "device_peak",
    "flops_per_token",
    "mfu",
    "parameters_non_embedding",
]
