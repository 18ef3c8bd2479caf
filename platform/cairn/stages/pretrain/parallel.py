"""Fully sharded data parallelism (FSDP2) for the pretrain stage, and full-state checkpoints.

DDP keeps a whole copy of the weights, gradients and AdamW moments on every worker (16 bytes
per float32 parameter), which caps the model size at what one device holds. FSDP2
(`torch.distributed.fsdp.fully_shard`) keeps 1/world of each on every worker and gathers a
decoder layer's weights only while that layer runs; with the same data and seed it trains the
same model as DDP (same losses to float32 rounding).

Checkpoints stay unsharded, in the layout `model.state_dict()` of an unwrapped model has, so a
checkpoint does not depend on how many workers wrote it, `model.export_model` reads it as is,
and a run can resume on a different number of workers. Gathering is a collective: every rank
calls `full_state`, rank 0 gets the tensors (on CPU) and writes them.

Works on CPU with the gloo backend as well as on CUDA with NCCL.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard


def shard(model: nn.Module, mesh: Any = None) -> nn.Module:
    """Shard a `LlamaForCausalLM` in place across the default process group (or `mesh`).

    Each decoder layer is its own FSDP unit, so only one layer's weights are gathered at a
    time; the root unit holds the rest (embedding, final norm, LM head). The tied embedding and
    LM head are one parameter in the root unit, so they stay tied.
    """
    for layer in model.model.layers:  # type: ignore[union-attr]
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


# Gather to full tensors on CPU; with cpu_offload only rank 0 receives them (the others get
# empty dicts), so a checkpoint never needs a full copy per worker.
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Load full tensors that only rank 0 has: it broadcasts them and every rank keeps its shard.
_SCATTER = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
# Load full tensors that every rank has into an unsharded (DDP or single) model.
_WHOLE = StateDictOptions(full_state_dict=True)


def full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unsharded model and optimizer state, on CPU, for rank 0 to write; for a sharded
    model and for a plain one alike, so every checkpoint has one layout.

    A collective: every rank must call it. Rank 0 gets the full state dicts; the other ranks
    get empty dicts. The optimizer state is keyed by parameter name (not by position as
    `optimizer.state_dict()` is), which is what `load_full_state` expects.
    """
    model_sd = get_model_state_dict(model, options=_GATHER)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_GATHER)
    return model_sd, optim_sd


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_sd: dict[str, Any],
    optim_sd: dict[str, Any],
    sharded: bool = True,
) -> None:
    """Load what `full_state` returned into `model` (sharded or not) and its `optimizer`.

    Sharded, a collective: every rank must call it; only rank 0 needs the state dicts (the
    others may pass empty dicts); rank 0 broadcasts and each rank keeps its own shard.
    Unsharded, each rank loads the whole state it was given.
    """
    options = _SCATTER if sharded else _WHOLE
    # set_model_state_dict puts the loaded shards (DTensors) into the dict it is given: a
    # copy keeps the caller's full tensors intact (and loadable into an unsharded model).
    set_model_state_dict(model, dict(model_sd), options=options)
    set_optimizer_state_dict(model, optimizer, optim_sd, options=options)


__all__ = ["full_state", "load_full_state", "shard"]
