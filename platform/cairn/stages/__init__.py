"""The built-in stage kinds, one folder each, named here explicitly (no entry-point scanning).

| kind | folder | what it does |
|---|---|---|
| curate | `curate/` | raw text → cleaned, deduplicated, tokenized shards with a data card |
| pretrain | `pretrain/` | a Llama-style model from scratch with Ray Train |
| sft, dpo | `sft/`, `dpo/` | post-training with TRL on Ray Train (their shared base: `posttrain/`) |
| rlvr | `rlvr/` | reinforcement learning with verifiable rewards (TRL's GRPO, same base) |
| evaluate | `evaluate/` | lm-evaluation-harness on local task folders |
| serve | `serve/` | an OpenAI-compatible endpoint, smoke-tested |
| release | `release/` | the model with its whole ancestry, checkable by `cairn audit` |

Each folder has the same layout: `__init__.py` holds `SPEC = register(StageSpec(...))` and
`run`, `config.py` beside it its config model, the rest is the kind's own code. A kind's module
is imported when the kind is first looked up, so a Ray worker running a pretrain step imports
pretrain's, not curate's numpy and pyarrow. A kind from elsewhere (a plugin, a test) calls
`cairn.stage.register(StageSpec(...))` when its module is imported, as these do.
"""

from __future__ import annotations

from cairn.stage import StageSpec, lookup, registered

BUILTIN = {
    "curate": "cairn.stages.curate",
    "pretrain": "cairn.stages.pretrain",
    "sft": "cairn.stages.sft",
    "dpo": "cairn.stages.dpo",
    "rlvr": "cairn.stages.rlvr",
    "evaluate": "cairn.stages.evaluate",
    "serve": "cairn.stages.serve",
    "release": "cairn.stages.release",
}


def get(kind: str, module: str | None = None) -> StageSpec:
    """The spec of a built-in or registered kind (`module`: where a plugin kind lives)."""
    return lookup(kind, module or BUILTIN.get(kind))


def kinds() -> list[str]:
    """Every kind a workflow can name: the built-ins, then those registered since."""
    return [*BUILTIN, *(k for k in registered() if k not in BUILTIN)]


__all__ = ["BUILTIN", "get", "kinds"]
