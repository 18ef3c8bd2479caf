"""The release's model card (README.md) and data card (DATA_CARD.md), generated from facts.

Every number in a card is read from the bundle's own records (manifests, dataset.json, metrics,
eval reports), so the cards cannot drift from what `cairn audit` verifies.
"""

from __future__ import annotations

import json
from typing import Any

from cairn.graphs import to_mermaid


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def model_card(f: dict[str, Any]) -> str:
    name, cfg, model = f["name"], f["config"], f["model"]
    env = f["environment"]
    params = (model.get("metadata") or {}).get("parameters")
    first = next((t for t in f["training"] if t["kind"] == "pretrain"), None)
    arch = (first or {}).get("summary", {}).get("architecture", "causal language model")
    chain = " → ".join(f"`{t['step']}` ({t['kind']})" for t in f["training"])
    parts = [
        f"# {name}\n",
        (cfg["description"] + "\n") if cfg["description"] else "",
        f"A {arch}"
        + (f" with {params:,} parameters" if isinstance(params, int) else "")
        + ", released by Cairn with everything that made it: data "
        "manifest, code version, every step's config, intermediate checkpoints, training logs, "
        "evaluations and the lineage graph from the raw sources to these weights.\n",
        f"- Model digest: `{f['model_digest']}`",
        f"- Made by: {chain or 'one step'}",
        f"- Code: git `{env.get('git_commit') or 'unknown'}`"
        + (" (with uncommitted changes)" if env.get("git_dirty") else ""),
        f"- Licence: {cfg['license']}\n",
        "## Use\n",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        'model = AutoModelForCausalLM.from_pretrained("model")\n'
        'tokenizer = AutoTokenizer.from_pretrained("model")\n```\n',
        'vLLM loads the same directory: `LLM(model="model")`, or serve it with '
        "`cairn serve model`.\n",
        "## How it was made\n",
        _training_section(f["training"]),
        "## Data\n",
        _data_summary(f["data"]),
        "See [DATA_CARD.md](DATA_CARD.md) for sources, filters and splits.\n",
        "## Evaluation\n",
        _eval_section(f["evals"]),
        "## Intermediate checkpoints\n",
        _checkpoint_section(f["checkpoints"]),
        "## Limitations\n",
        cfg["limitations"] + "\n",
        "## Lineage\n",
        "```mermaid\n" + to_mermaid(f["lineage"]["nodes"], f["lineage"]["edges"]) + "```\n",
        "## Verify this release\n",
        "`cairn audit .` re-checks every file against `SHA256SUMS`, every copied file against the "
        "manifest of the artifact it came from, every lineage edge back to the raw sources, that "
        "the model loads, and that the evaluation reports refer to this model's digest.\n",
        "## Reproduce\n",
        "`config/workflow.yaml` is the workflow; `config/steps.json` holds each step's resolved "
        "config and fingerprint inputs; `config/environment.json` the package versions. "
        "Running the workflow with the same versions recomputes the same artifacts.\n",
    ]
    return "\n".join(p for p in parts if p)


def _training_section(training: list[dict[str, Any]]) -> str:
    if not training:
        return "No training records in the ancestry.\n"
    rows = []
    for t in training:
        s = t["summary"]
        loss = s.get("final_train_loss", s.get("final_loss"))
        rows.append(
            [
                t["step"],
                t["kind"],
                _fmt(s.get("steps")),
                _fmt(s.get("tokens_seen", s.get("tokens"))),
                _fmt(loss),
                f"[metrics]({t['bundle_path']}/training_metrics.csv)"
                + (f" · [loss]({t['bundle_path']}/loss.png)" if t["has_plot"] else ""),
            ]
        )
    return _table(["step", "kind", "optimizer steps", "tokens", "final loss", "logs"], rows) + "\n"


def _data_summary(data: dict[str, Any]) -> str:
    lines = [f"- {len(data['sources'])} raw source(s):"]
    lines += [f"  - `{s['uri']}` (sha256 `{s['digest'][:16]}…`)" for s in data["sources"]]
    for d in data["datasets"]:
        split = d["split"]
        lines.append(
            f"- `{d['step']}`: {_fmt(split.get('train_tokens'))} training and "
            f"{_fmt(split.get('validation_tokens'))} validation tokens, vocabulary "
            f"{_fmt(d['tokenizer']['vocab_size'])}"
        )
    return "\n".join(lines) + "\n"


def _eval_section(evals: list[dict[str, Any]]) -> str:
    if not evals:
        return "This release carries no evaluation reports.\n"
    rows = [
        [e["step"], k, _fmt(v), f"[report]({e['bundle_path']}/report.json)"]
        for e in evals
        for k, v in sorted(e["metrics"].items())
    ]
    return _table(["eval step", "task/metric", "score", "details"], rows) + "\n"


def _checkpoint_section(ckpts: list[dict[str, Any]]) -> str:
    if not ckpts:
        return "No intermediate checkpoints were kept.\n"
    rows = [
        [
            c["step_name"],
            c["step"],
            _fmt(c["tokens_seen"]),
            f"`{c['bundle_path']}`" if c["copied"] else f"`{c['uri']}`",
        ]
        for c in ckpts
    ]
    return (
        _table(["training step", "step", "tokens seen", "where"], rows)
        + "\n\nEach is a Hugging Face model directory; `checkpoints/index.json` lists their "
        "files with sha256.\n"
    )


def data_card(f: dict[str, Any]) -> str:
    data = f["data"]
    parts = [f"# Data card: {f['name']}\n"]
    parts.append("## Raw sources\n")
    parts.append(
        _table(
            ["source", "files", "bytes", "sha256"],
            [
                [f"`{s['uri']}`", s["files"], f"{s['bytes']:,}", f"`{s['digest'][:16]}…`"]
                for s in data["sources"]
            ],
        )
        + "\n"
    )
    for d in data["datasets"]:
        parts.append(f"## Curated dataset `{d['step']}` (`{d['digest'][:16]}…`)\n")
        filters = sorted({k for s in d["sources"].values() for k in s.get("removed", {})})
        rows = [
            [
                f"`{src}`",
                s.get("documents_in"),
                s.get("documents_out"),
                *[s.get("removed", {}).get(k, 0) for k in filters],
                _fmt(s.get("tokens")),
            ]
            for src, s in d["sources"].items()
        ]
        parts.append(
            "Documents kept and removed by each curation filter, per source:\n\n"
            + _table(
                ["source", "documents in", "kept", *[f"removed: {k}" for k in filters], "tokens"],
                rows,
            )
            + "\n"
        )
        split = d["split"]
        parts.append(
            "Split: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in split.items() if v is not None)
            + ".\n"
        )
        tok = d["tokenizer"]
        parts.append(
            f"Tokenizer: byte-level BPE trained on the training split, vocabulary "
            f"{_fmt(tok['vocab_size'])}, sequences of {_fmt(tok['seq_len'])} tokens "
            f"(`{d['bundle_path']}/tokenizer`).\n"
        )
        parts.append(
            "Curation config:\n\n```json\n"
            + json.dumps(d.get("config") or {}, indent=2, sort_keys=True)
            + "\n```\n"
        )
    return "\n".join(parts)
