"""The data card as markdown: one dataset's sources, filters, mix, lengths and removed examples.

Rendered from a dataset.json dict alone (with the `CardStats` record under "card" when the
dataset has one), so the curate stage writes the dataset's own DATA_CARD.md with it and the
release renders the same card into its DATA_CARD.md from the copied dataset.json, pointing the
images at its own copies. Every number shown is read from that record, never recomputed.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Collection, Iterable
from typing import Any

from cairn.stages.curate.card import (
    LENGTHS_PNG,
    REMOVED_PNG,
    TOKENS_PNG,
    CardStats,
    filters_in_order,
)

DECONTAM_EXAMPLES = 10  # contaminated documents listed by name; the rest are counted


def render_markdown(
    meta: dict[str, Any],
    *,
    images: Collection[str] = (),
    prefix: str = "",
    title: str | None = "Data card",
    level: int = 2,
) -> str:
    """The data card of one dataset, from its dataset.json dict.

    `images`: the card files that exist (paths relative to the dataset, e.g. "card/lengths.png");
    links are `prefix` + that path, so the release can point into its own copy. Sections are
    headings of `level`; `title`, when given, is the heading above them.
    """
    card = CardStats.from_dict(meta["card"]) if meta.get("card") else None
    h = "#" * level
    sources: dict[str, Any] = meta.get("sources") or {}
    parts = [f"{'#' * (level - 1)} {title}\n"] if title else []
    parts.append(_summary(meta))
    parts += [f"{h} Sources\n", _sources_table(sources)]
    parts += [f"{h} Documents per source and filter\n", _counts_table(meta)]
    parts.append(_image(images, prefix, REMOVED_PNG, "documents removed per filter and source"))
    if meta.get("mix"):
        parts += [f"{h} Mix\n", _mix(meta["mix"])]
    lengths = [
        _lengths_table(card) if card is not None and card.sources else "",
        _image(images, prefix, LENGTHS_PNG, "document lengths, read vs kept"),
        _image(images, prefix, TOKENS_PNG, "tokens per source"),
    ]
    if any(lengths):  # a dataset from before the card has neither table nor plots
        parts += [f"{h} Lengths and tokens\n", *lengths]
    if meta.get("decontamination"):
        parts += [f"{h} Decontamination\n", _decontamination(meta["decontamination"])]
    if any(s.get("pii") for s in sources.values()):
        parts += [f"{h} Personal information scrubbed\n", _pii(sources)]
    if card is not None:
        parts += [f"{h} Removed examples\n", _examples(card, meta)]
    parts += [f"{h} Tokenizer and packing\n", _packing(meta)]
    parts += [f"{h} Reproduce\n", _reproduce(meta)]
    return "\n".join(p for p in parts if p)


def _n(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def _cell(v: Any) -> str:
    # A '|' inside a cell would end it; newlines would end the row.
    return _n(v).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _code(v: str) -> str:
    return f"`{v}`" if "`" not in v else v


def _image(images: Collection[str], prefix: str, rel: str, alt: str) -> str:
    return f"![{alt}]({prefix}{rel})\n" if rel in images else ""


def _pct(part: int | None, whole: int | None) -> str:
    return f"{100 * part / whole:.1f}%" if part is not None and whole else "—"


def _summary(meta: dict[str, Any]) -> str:
    sources = meta.get("sources") or {}
    n_in = sum(s.get("documents_in") or 0 for s in sources.values())
    n_out = sum(s.get("documents_out") or 0 for s in sources.values())
    tokens = sum(s.get("tokens") or 0 for s in sources.values())
    return (
        f"{len(sources)} source(s): {_n(n_in)} documents read, {_n(n_out)} kept "
        f"({_pct(n_out, n_in)}), {_n(tokens)} tokens in the kept documents; "
        f"{_n(meta.get('train_sequences'))} training and {_n(meta.get('validation_sequences'))} "
        f"validation sequences of {_n(meta.get('seq_len'))} tokens.\n"
    )


def _sources_table(sources: dict[str, Any]) -> str:
    has_files = any("files" in s for s in sources.values())
    rows = []
    for name, s in sources.items():
        files = s.get("files")
        row = [_code(name), s.get("license") or "not declared: check before redistributing"]
        row += [len(files) if isinstance(files, list) else files] if has_files else []
        digest = s.get("digest")
        rows.append([*row, f"`{digest[:16]}…`" if digest else "—"])
    header = ["source", "licence", *(["files"] if has_files else []), "sha256 of the raw source"]
    return _table(header, rows)


def _counts_table(meta: dict[str, Any]) -> str:
    """One row per filter, one column per source and a total: readable with many filters."""
    sources: dict[str, Any] = meta.get("sources") or {}
    names = list(sources)
    n_in = sum(s.get("documents_in") or 0 for s in sources.values())
    header = ["", *[_code(n) for n in names], "total", "% of read"]

    def row(label: str, values: list[Any], pct: bool = True) -> list[Any]:
        total = sum(v or 0 for v in values)
        return [label, *values, total, _pct(total, n_in) if pct else ""]

    rows = [row("documents read", [s.get("documents_in") for s in sources.values()], False)]
    reasons = sorted({r for s in sources.values() for r in (s.get("skipped") or {})})
    for r in reasons:
        rows.append(
            row(
                f"skipped as malformed ({r})",
                [(s.get("skipped") or {}).get(r, 0) for s in sources.values()],
            )
        )
    for f in filters_in_order(meta):
        rows.append(
            row(f"removed by `{f}`", [(s.get("removed") or {}).get(f, 0) for s in sources.values()])
        )
    rows.append(row("**kept**", [s.get("documents_out") for s in sources.values()]))
    rows.append(row("tokens kept", [s.get("tokens") for s in sources.values()], False))
    head = (
        "Filters run in this order; a removed document counts against the first filter that "
        "removed it, so the counts add up to the documents dropped.\n\n"
    )
    return head + _table(header, rows)


def _mix(mix: dict[str, Any]) -> str:
    rows = []
    for name, m in (mix.get("sources") or {}).items():
        epochs = m.get("epochs")
        if epochs is None:
            how = "—"
        elif epochs > 1 + 1e-6:
            how = f"up-sampled: each token seen {epochs:.2f}× on average"
        elif epochs < 1 - 1e-6:
            how = f"down-sampled: {epochs:.1%} of its tokens used"
        else:
            how = "used once, as is"
        rows.append(
            [
                _code(name),
                m.get("weight"),
                _pct(m.get("share"), 1) if m.get("share") is not None else "—",
                m.get("tokens_available"),
                m.get("tokens_used"),
                m.get("documents_used"),
                f"{epochs:.3g}" if epochs is not None else "—",
                how,
            ]
        )
    target = mix.get("target_tokens")
    head = (
        f"Target: {_n(target)} tokens" if target is not None else "No token target: weights only"
    ) + ". Epochs = tokens used / tokens available.\n\n"
    header = ["source", "weight", "share", "tokens available", "tokens used", "documents used"]
    return head + _table([*header, "epochs", "sampling"], rows)


def _lengths_table(card: CardStats) -> str:
    rows = []
    for name, s in card.sources.items():
        per_token = s.chars_out.total / s.tokens_out.total if s.tokens_out.total else None
        rows.append(
            [
                _code(name),
                s.chars_in.mean(),
                s.chars_out.mean(),
                s.chars_out.median(),
                s.chars_out.max if s.chars_out.count else None,
                s.tokens_out.mean(),
                f"{per_token:.2f}" if per_token else None,
            ]
        )
    header = ["source", "mean chars read", "mean chars kept", "median chars kept (≈)"]
    header += ["longest kept", "mean tokens per kept doc", "chars per token"]
    return _table(header, rows)


def _decontamination(d: dict[str, Any]) -> str:
    out = [
        f"Training documents were checked for {_n(d.get('ngram'))}-word n-grams of "
        f"{_n(d.get('items'))} benchmark items; action: `{d.get('action')}`.\n",
        _table(
            ["benchmark file", "sha256"], [[f, f"`{h}`"] for f, h in (d.get("files") or {}).items()]
        ),
        _table(
            ["source", "contaminated documents"],
            [[_code(s), n] for s, n in (d.get("contaminated") or {}).items()],
        )
        if d.get("contaminated")
        else "No training document shares an n-gram with any benchmark item.\n",
    ]
    examples = d.get("examples") or []
    for ex in examples[:DECONTAM_EXAMPLES]:
        items = ", ".join(f"`{i}`" for i in ex.get("items") or [])
        out.append(f"- document `{ex.get('doc_id')}` of `{ex.get('source')}` matches {items}")
    if len(examples) > DECONTAM_EXAMPLES:
        more = len(examples) - DECONTAM_EXAMPLES
        out.append(f"- … and {more:,} more (every one is in the dataset's decontamination.jsonl)")
    return "\n".join(out) + "\n"


def _pii(sources: dict[str, Any]) -> str:
    rows = [
        [_code(name), kind, n]
        for name, s in sources.items()
        for kind, n in sorted((s.get("pii") or {}).items())
    ]
    if not rows:
        return "Scrubbing was on and found nothing.\n"
    head = "Placeholders inserted (`<EMAIL>`, `<PHONE>`, …) in place of what was found:\n\n"
    return head + _table(["source", "type", "replaced"], rows)


def _examples(card: CardStats, meta: dict[str, Any]) -> str:
    out = [
        f"The first {card.max_examples} documents each filter removed, per source; texts are cut "
        f"at {card.example_chars} characters (marked ✂).\n"
    ]
    filters = filters_in_order(meta) + sorted(
        {f for s in card.sources.values() for f in s.examples} - set(filters_in_order(meta))
    )
    for f in filters:
        for name, s in card.sources.items():
            examples = s.examples.get(f) or []
            if not examples:
                continue
            summary = html.escape(f"{f}: {len(examples)} of {s.removed.get(f, 0):,} from {name}")
            out.append(f"<details><summary>{summary}</summary>\n")
            for ex in examples:
                out.append(f"`{ex['id']}` ({ex['chars']:,} characters)\n")
                out.append(_fence(ex["text"] + (" ✂" if ex.get("truncated") else "")))
            out.append("</details>\n")
    if len(out) == 1:
        out.append("No document was removed.\n")
    return "\n".join(out)


def _fence(text: str) -> str:
    # A fence longer than any run of backticks in the text, so the text cannot close it.
    runs = [len(m) for m in re.findall(r"`+", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}text\n{text}\n{fence}\n"


def _packing(meta: dict[str, Any]) -> str:
    sources = meta.get("sources") or {}
    kept = sum(s.get("tokens") or 0 for s in sources.values())
    mix = (meta.get("mix") or {}).get("sources") or {}
    used = sum(m.get("tokens_used") or 0 for m in mix.values()) if mix else kept
    train, val = meta.get("train_tokens"), meta.get("validation_tokens")
    packed = (train or 0) + (val or 0)
    rows: list[list[Any]] = [
        ["vocabulary", meta.get("vocab_size")],
        [
            "BOS / EOS / PAD token ids",
            " / ".join(_n(meta.get(f"{k}_token_id")) for k in ("bos", "eos", "pad")),
        ],
        ["sequence length", meta.get("seq_len")],
        ["tokens in kept documents (EOS included)", kept],
    ]
    rows += [["tokens selected by the mix", used]] if mix else []
    rows += [
        ["training sequences / tokens", f"{_n(meta.get('train_sequences'))} / {_n(train)}"],
        ["validation sequences / tokens", f"{_n(meta.get('validation_sequences'))} / {_n(val)}"],
        ["packed / selected", _pct(packed, used)],
    ]
    return (
        "A byte-level BPE tokenizer trained on the training split; documents are joined with "
        "EOS and cut into sequences, the tail shorter than one sequence is dropped.\n\n"
        + _table(["", "value"], rows)
    )


def _reproduce(meta: dict[str, Any]) -> str:
    digests = [
        f"- `{name}`: sha256 `{s['digest']}`"
        for name, s in (meta.get("sources") or {}).items()
        if s.get("digest")
    ]
    return (
        "Run the workflow's curate step (`cairn run WORKFLOW.yaml`) with this config over sources "
        "with these digests; with the same package versions it produces the same dataset.\n\n"
        + ("\n".join(digests) + "\n\n" if digests else "")
        + "```json\n"
        + json.dumps(meta.get("config") or {}, indent=2, sort_keys=True)
        + "\n```\n"
    )


__all__ = ["render_markdown"]
