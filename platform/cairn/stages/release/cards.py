"""The release's model card (README.md) and data card (DATA_CARD.md), generated from facts.

Every number in a card is read from the bundle's own records (manifests, dataset.json, metrics,
eval reports), so the cards cannot drift from what `cairn audit` verifies. Each curated dataset's
part of DATA_CARD.md is that dataset's own data card (`cairn.stages.curate.card_markdown`),
rendered from its copied dataset.json with links into the bundle.
"""

from __future__ import annotations

from typing import Any

from cairn.stage.lineage import to_mermaid
from cairn.stages.curate.card import CARD_MD, REMOVED_JSONL
from cairn.stages.curate.card_markdown import render_markdown
from cairn.stages.release.contamination import describe
from cairn.stages.release.sources import license_text


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def _compute_section(compute: dict[str, Any]) -> str:
    """Held compute per stage kind (every attempt, failed ones included); compute.json has more."""
    if not compute["per_stage"]:
        return "No compute was recorded for this model's steps (made outside the engine).\n"
    lines = [
        "| stage | worker-hours | CPU-hours | GPU-hours | CPU time (h) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, t in [*compute["per_stage"].items(), ("**total**", compute["total"])]:
        cells = [
            t.get(k, 0.0) / 3600
            for k in ("worker_seconds", "cpu_seconds", "gpu_seconds", "cpu_time_seconds")
        ]
        lines.append(f"| {kind} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return (
        "\n".join(lines) + "\n\nHours held by each stage's workers, failed attempts included; "
        "`compute.json` lists every step with peak memory per worker.\n"
    )


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
        *_base_models(f),
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
        _lora_section(f.get("adapters") or []),
        "## Data\n",
        _data_summary(f["data"]),
        "See [DATA_CARD.md](DATA_CARD.md) for sources, filters and splits.\n",
        "## Evaluation\n",
        _eval_section(f["evals"]),
        "## Intermediate checkpoints\n",
        _checkpoint_section(f["checkpoints"]),
        "## Compute\n",
        _compute_section(f["compute"]),
        "## Limitations\n",
        cfg["limitations"] + "\n",
        "## Lineage\n",
        "```mermaid\n" + to_mermaid(f["lineage"]["nodes"], f["lineage"]["edges"]) + "```\n",
        "## Verify this release\n",
        "`cairn audit .` re-checks every file against `SHA256SUMS`, every copied file against the "
        "manifest of the artifact it came from, every lineage edge back to the raw sources, that "
        "the model loads, and that the evaluation reports refer to this model's digest. "
        "`provenance.intoto.json` is the release's SLSA provenance (in-toto); if the publisher "
        "signed the release, `release.sig` verifies with their public key: "
        "`cairn audit . --verify-signature --public-key PUB.pem`, or without Cairn "
        "`model_signing verify key --signature release.sig --public_key PUB.pem .`.\n",
        "## Reproduce\n",
        "`config/workflow.yaml` is the workflow; `config/steps.json` holds each step's resolved "
        "config and fingerprint inputs; `config/environment.json` the package versions. "
        "`cairn reproduce .` checks that: it re-runs the workflow in a fresh Cairn home with the "
        "same package versions "
        + (
            "(the raw sources travel in `sources/`) "
            if f["config"].get("include_sources")
            else "(give the raw sources' folder with `--sources DIR`) "
        )
        + "and compares every artifact of the lineage file by file with the recorded digests.\n",
    ]
    return "\n".join(p for p in parts if p)


def _imported(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The models in the lineage that no step made: imported from outside as a step's input."""
    return [s for s in data["sources"] if s.get("type", "raw") != "raw"]


def _base_models(f: dict[str, Any]) -> list[str]:
    """The model card's line for each imported base model, with the licence the workflow stated
    (the weights released here derive from it, so its licence binds them too)."""
    return [
        f"- Fine-tuned from `{s['uri']}` (`{s['digest']}`), licence {license_text(s)}"
        for s in _imported(f["data"])
        if s["digest"] != f["model_digest"]
    ]


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
    table = _table(["step", "kind", "optimizer steps", "tokens", "final loss", "logs"], rows)
    return table + "\n" + _rlvr_lines(training)


def _rlvr_lines(training: list[dict[str, Any]]) -> str:
    """What each RLVR step did to the verifiable reward, which is its point."""
    lines = []
    for t in training:
        s = t["summary"]
        if t["kind"] != "rlvr" or s.get("reward_first") is None:
            continue
        per = ", ".join(
            f"{name} {_fmt(v['first'])} → {_fmt(v['last'])}"
            for name, v in sorted((s.get("reward_by_verifier") or {}).items())
        )
        lines.append(
            f"- `{t['step']}` (RLVR): mean verifiable reward {_fmt(s['reward_first'])} over its "
            f"first {s['reward_window']} steps → {_fmt(s['reward_last'])} over its last "
            f"{s['reward_window']}" + (f" (per verifier: {per})" if per else "") + "; "
            f"[reward curve]({t['bundle_path']}/reward.png), "
            f"[rollouts]({t['bundle_path']}/rollouts.jsonl)"
        )
    return ("\n".join(lines) + "\n") if lines else ""


def _lora_section(adapters: list[dict[str, Any]]) -> str:
    """Each LoRA merge in the ancestry: base + adapter → model, and where the adapter is."""
    if not adapters:
        return ""
    lines = ["### LoRA\n"]
    for a in adapters:
        lora = a.get("lora") or {}
        targets = lora.get("target_modules")
        shown = ", ".join(targets) if isinstance(targets, list) else str(targets)
        trained, total = a.get("trainable_parameters"), a.get("total_parameters")
        counts = (
            f": {trained:,} of its {total:,} parameters were trained"
            if isinstance(trained, int) and isinstance(total, int)
            else ""
        )
        base = f"`{a['base_name']}` " if a.get("base_name") else ""
        lines.append(
            f"- `{a['step']}` ({a['kind']}) trained a LoRA adapter (r={_fmt(lora.get('r'))}, "
            f"alpha={_fmt(lora.get('alpha'))}, dropout={_fmt(lora.get('dropout'))}, on "
            f"{shown}){counts}. Its model `{str(a['model'])[:16]}…` is the base "
            f"{base}(`{str(a['base'])[:16]}…`) with adapter `{a['adapter'][:16]}…` merged into "
            f"its weights ({a.get('merge') or 'merged'}). The adapter is in "
            f"`{a['bundle_path']}/`: `PeftModel.from_pretrained(base, "
            f'"{a["bundle_path"]}")` loads it onto that base.'
        )
    return "\n".join(lines) + "\n"


def _data_summary(data: dict[str, Any]) -> str:
    raw = [s for s in data["sources"] if s.get("type", "raw") == "raw"]
    lines = [f"- {len(raw)} raw source(s):"]
    lines += [
        f"  - `{s['uri']}` (sha256 `{s['digest'][:16]}…`, licence {license_text(s)})" for s in raw
    ]
    lines += [
        f"- base model `{s['uri']}` (sha256 `{s['digest'][:16]}…`, licence {license_text(s)})"
        for s in _imported(data)
    ]
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
    lines = [_table(["eval step", "task/metric", "score", "details"], rows), ""]
    lines.extend(_before_after(evals))
    lines.append("Contamination (eval data checked against the training data by curate):\n")
    for e in evals:
        entry = e.get("contamination") or {"recorded": False}
        lines.append(f"- `{e['step']}`: {describe(entry)}")
    trusted = [e for e in evals if e.get("trust_task_code")]
    if trusted:
        lines.append("\nPython from the task folders (trust_task_code: true):\n")
    for e in trusted:
        files = ", ".join(f"`{f['path']}` (sha256 `{f['sha256'][:16]}…`)" for f in e["task_code"])
        lines.append(f"- `{e['step']}`: lm-eval ran {files or 'no Python file of the folder'}")
    return "\n".join(lines) + "\n"


def _before_after(evals: list[dict[str, Any]]) -> list[str]:
    """Where reports score the released model and models it was trained from, each metric side
    by side, earliest model first (the order the reports were given in)."""
    models: list[str] = list(dict.fromkeys(e["model_step"] for e in evals if e.get("model_step")))
    if len(models) < 2:
        return []
    scores: dict[str, dict[str, Any]] = {}
    for e in evals:
        for k, v in e["metrics"].items():
            scores.setdefault(k, {})[e.get("model_step") or ""] = v
    rows = [[k, *(_fmt(by.get(m)) for m in models)] for k, by in sorted(scores.items())]
    return [
        "Before and after: the same tasks on the models this one was trained from.\n",
        _table(["task/metric", *(f"`{m}`" for m in models)], rows),
        "",
    ]


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
    raw = [s for s in data["sources"] if s.get("type", "raw") == "raw"]
    parts.append("## Raw sources\n")
    parts.append(_sources_table(raw) + "\n")
    if imported := _imported(data):
        parts.append("## Base models\n")
        parts.append(
            "Models imported from outside Cairn (a Hugging Face directory given as a step's "
            "input): the roots of the released weights' lineage, digested file by file.\n"
        )
        parts.append(_sources_table(imported) + "\n")
    for d in data["datasets"]:
        parts.append(f"## Curated dataset `{d['step']}` (`{d['digest'][:16]}…`)\n")
        path = d["bundle_path"]
        # The dataset's own card, rendered again from its copied dataset.json with the images
        # pointing at the bundle's copies (a dataset from before the card gets its tables only).
        record = d.get("record") or {"sources": d["sources"], "filters": d["filters"]}
        parts.append(
            render_markdown(
                {**record, "config": record.get("config") or d.get("config")},
                images=d.get("card_files") or [],
                prefix=f"{path}/",
                title=None,
                level=3,
            )
        )
        held_out = d["split"].get("val_fraction")
        parts.append(
            (
                f"{_fmt(held_out)} of the documents are held out for validation (by content hash). "
                if held_out is not None
                else ""
            )
            + f"The tokenizer is in `{path}/tokenizer`"
            + (
                f", the dataset's own card in [{path}/{CARD_MD}]({path}/{CARD_MD})"
                if CARD_MD in (d.get("card_files") or [])
                else ""
            )
            + (
                f", the removed examples in `{path}/{REMOVED_JSONL}`"
                if REMOVED_JSONL in (d.get("card_files") or [])
                else ""
            )
            + ".\n"
        )
    return "\n".join(parts)


def _sources_table(sources: list[dict[str, Any]]) -> str:
    return _table(
        ["source", "licence", "files", "bytes", "sha256"],
        [
            [
                f"`{s['uri']}`",
                license_text(s).replace("|", "\\|"),
                s["files"],
                f"{s['bytes']:,}",
                f"`{s['digest'][:16]}…`",
            ]
            for s in sources
        ],
    )
