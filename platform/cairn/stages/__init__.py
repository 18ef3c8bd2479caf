"""The built-in stage kinds, one folder each, registered here explicitly (no entry-point scanning).

| kind | folder | what it does |
|---|---|---|
| curate | `curate/` | raw text → cleaned, deduplicated, tokenized shards with a data card |
| pretrain | `pretrain/` | a Llama-style model from scratch with Ray Train |
| sft, dpo | `sft/`, `dpo/` | post-training with TRL on Ray Train (their shared base: `posttrain/`) |
| evaluate | `evaluate/` | lm-evaluation-harness on local task folders |
| serve | `serve/` | an OpenAI-compatible endpoint, smoke-tested |
| release | `release/` | the model with its whole ancestry, checkable by `cairn audit` |

Each folder has the same layout: `__init__.py` holds `SPEC` (and `run`), `config.py` beside it
its config model, the rest is the kind's own code. To add a kind elsewhere, call
`cairn.stage.register(StageSpec(...))` when its module is imported.
"""

from __future__ import annotations

from cairn.stage import StageSpec, lookup, register, registered
from cairn.stages import curate, dpo, evaluate, pretrain, release, serve, sft

BUILTIN = (curate, pretrain, sft, dpo, evaluate, serve, release)
for _kind in BUILTIN:
    register(_kind.SPEC)


def get(kind: str, module: str | None = None) -> StageSpec:
    """The spec of a built-in or registered kind (`module`: where a plugin kind lives)."""
    return lookup(kind, module)


def kinds() -> list[str]:
    """Every kind a workflow can name: the built-ins, then those registered since."""
    return registered()


__all__ = ["BUILTIN", "get", "kinds"]
