"""`models_above`: the one walk the release (over its ancestry) and the audit (over a bundle's
manifests) share to accept eval reports of the released model or of a model it came from."""

from __future__ import annotations

from cairn.stage.lineage import models_above

PARENTS = {
    "rl": [{"type": "model", "digest": "dpo"}, {"type": "raw", "digest": "prompts"}],
    "dpo": [{"type": "model", "digest": "sft"}, {"type": "raw", "digest": "pairs"}],
    "sft": [{"type": "model", "digest": "base"}, {"type": "adapter", "digest": "lora"}],
    "base": [{"type": "dataset", "digest": "corpus"}],
    "other": [{"type": "model", "digest": "base"}],
}


def test_the_models_above_are_the_model_chain_and_nothing_beside_it() -> None:
    def parents(d: str) -> list[dict[str, str]]:
        return PARENTS.get(d, [])

    assert models_above("rl", parents) == {"rl", "dpo", "sft", "base"}
    assert models_above("sft", parents) == {"sft", "base"}  # never a model below it
    assert models_above("unknown", parents) == {"unknown"}
    looped = {**PARENTS, "base": [{"type": "model", "digest": "rl"}]}  # a cycle ends the walk
    assert models_above("rl", lambda d: looped.get(d, [])) == {"rl", "dpo", "sft", "base"}
