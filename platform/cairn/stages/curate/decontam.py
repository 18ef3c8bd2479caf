"""Decontamination: finding evaluation items inside training documents by word n-gram overlap.

A model scored on text it was trained on is scored on its memory, not on what it learned. A
curate step's optional `eval_tasks` input takes the same task folders that `evaluate` steps take
as `tasks`; this module reads their data into an `EvalIndex` of word n-gram hashes, and curate's
scan workers ask it about every training document. A document that shares one n-gram with an
evaluation item is contaminated: removed, or kept and flagged (`DecontamConfig.action`). What was
checked (every data file with its sha256) and what was found go into dataset.json's
`decontamination` record (`report`) and `decontamination.jsonl` (`record`, one line per
contaminated document). The evaluate stage reads that record through the model's lineage and
refuses to score a task whose data files no dataset of the model checked (evaluate/gate.py).

Decisions, so that both sides agree on them:

- Task data is the files the task YAMLs name, nothing else: `dataset_kwargs.data_files` (a
  string, list or split mapping, globs allowed), `dataset_kwargs.data_dir` and a `dataset_path`
  that is a local folder, resolved against the YAML's own folder, then the task folder's root.
  YAMLs are configs, and READMEs or code are neither. A Hub dataset name is not local data
  (evaluate rejects such tasks anyway). These rules, and the reading of the YAMLs and of the data
  files, are the evaluate stage's own: `evaluate/taskfolder.py`, which both stages use.
- An item is one row of a data file: a JSONL line, an element of a JSON array (or of a list
  under a JSON object's only key), a CSV or Parquet row, a line of a text file. Its text is what
  lm-eval would show and expect, prompt then answer, where the task's YAML (with its `include:`)
  makes that simple to follow: doc_to_text and doc_to_target as column names or templates of
  `{{column}}` placeholders, an integer target indexing doc_to_choice. Anything else (`!function`,
  Jinja logic, columns that process_docs would add) falls back to every string value of the row,
  joined in the row's order, which still holds the prompt and answer. Not rendering the real
  Jinja keeps curate free of lm-eval; not always joining every field keeps ids and titles out of
  short items (an item "q-7 The Tempest Who rules the isle? Prospero" would never match).
- Words: the text is NFC-normalised (`text.normalise`), case-folded, every run of characters
  that are not letters or digits is a word break. So re-cased, re-spaced or re-punctuated copies
  match; re-worded ones do not.
- Short items: an item of fewer than `ngram` words is one gram of its own length (the document
  must contain the whole item); one of fewer than `min_item_words` words is not indexed (too
  short to tell a leak from a coincidence) and is counted as `items_too_short`.
- Refs: an item is named `<label>/<relpath>:<n>`, n being the 1-based line of a JSONL or text
  file, or the 1-based row of a JSON array, CSV or Parquet file.

Hashes are 64-bit and deterministic across processes (`ngrams`), so an index built on the driver
answers the same on every Ray worker; it is a few numpy arrays and a list of refs, and pickles
small.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cairn.errors import StageError
from cairn.stage import Context
from cairn.stages.curate import ngrams
from cairn.stages.curate.text import normalise
from cairn.stages.evaluate import taskfolder

if TYPE_CHECKING:
    import numpy as np

MAX_EXAMPLES = 20  # contaminated documents shown in dataset.json (all are in the JSONL)
FIX_TASKS = (
    "give the `eval_tasks` input the folder an evaluate step takes as `tasks` (task YAMLs with "
    "dataset_path: json and data_files relative to the YAML), e.g. ./evals/shakespeare"
)

_BREAK = re.compile(r"[\W_]+")  # anything but a letter or digit separates words
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")  # {{field}}, the only Jinja followed


class DecontamConfig(BaseModel):
    """How training documents are checked against evaluation data (the `eval_tasks` input)."""

    model_config = ConfigDict(extra="forbid")

    ngram: int = Field(
        8,
        ge=3,
        le=64,
        description="words in a window: a training document that shares any run of this many "
        "consecutive words with an evaluation item (ignoring case, spacing and punctuation) is "
        "contaminated. Smaller also catches common phrases; larger misses partial copies "
        "(lm-eval's decontamination tool and GPT-3 used 13)",
    )
    action: Literal["remove", "flag"] = Field(
        "remove",
        description="remove: drop contaminated documents from the dataset (counted as the "
        "`decontamination` filter); flag: keep them and only list them in "
        "decontamination.jsonl and dataset.json",
    )
    min_item_words: int = Field(
        4,
        ge=1,
        description="evaluation items shorter than `ngram` words are matched whole; items "
        "shorter than this are not checked at all (too short to tell a copy from a "
        "coincidence) and are counted as items_too_short",
    )

    @model_validator(mode="after")
    def _short_items_below_ngram(self) -> DecontamConfig:
        if self.min_item_words > self.ngram:
            raise ValueError(
                f"min_item_words ({self.min_item_words}) must not exceed ngram ({self.ngram}): "
                "items of ngram words or more are always checked"
            )
        return self


@dataclass
class EvalIndex:
    """The n-gram hashes of every evaluation item, and the way back from a hash to its items.

    `keys` is sorted and unique; the items of `keys[i]` are `item_ids[offsets[i]:offsets[i+1]]`,
    indices into `refs`. `lengths` are the window sizes to hash a document with: `ngram`, plus
    the length of every short item.
    """

    ngram: int
    keys: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len(keys) + 1
    item_ids: np.ndarray  # int32
    refs: list[str]  # "<label>/<relpath>:<n>" per indexed item
    # One bit per hash value modulo len(bitmap) * 8, set for every key: most of a document's
    # grams are in no item, and a bit lookup rules them out ~10x faster than a binary search.
    bitmap: np.ndarray  # uint8
    lengths: tuple[int, ...]
    files: dict[str, str]  # "<label>/<relpath>" -> sha256 of every data file read
    too_short: int = 0  # items under min_item_words, not indexed
    yamls: dict[str, list[str]] = field(default_factory=dict)  # label -> task YAMLs read

    @property
    def items(self) -> int:
        return len(self.refs)

    @classmethod
    def build(cls, task_dirs: list[tuple[str, Path]], cfg: DecontamConfig) -> EvalIndex:
        """Index every data file of the task folders [(label, local dir)] (see module doc)."""
        import numpy as np

        files: dict[str, str] = {}
        yamls: dict[str, list[str]] = {}
        refs: list[str] = []
        grams: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        lengths = {cfg.ngram}
        too_short = 0
        for label, root in task_dirs:
            label = label.rstrip("/") or str(root)
            found, yamls[label] = data_files(root)
            for path, templates in found.items():
                rel = path.relative_to(root).as_posix()
                files[f"{label}/{rel}"] = taskfolder.sha256(path)
                for n, row in taskfolder.read_rows(path):
                    # One text per task reading the file (usually one), each hashed alone.
                    texts = {tokens(item_text(row, t)) for t in templates}
                    texts = {w for w in texts if len(w) >= cfg.min_item_words}
                    if not texts:
                        too_short += 1
                        continue
                    item = []
                    for words in texts:
                        k = min(len(words), cfg.ngram)
                        lengths.add(k)
                        item.append(ngrams.grams(ngrams.word_hashes(words), [k]))
                    g = np.unique(np.concatenate(item))
                    grams.append(g)
                    owners.append(np.full(len(g), len(refs), dtype=np.int32))
                    refs.append(f"{label}/{rel}:{n}")
        if not files:
            where = ", ".join(f"{label} ({root})" for label, root in task_dirs) or "nothing"
            raise StageError(
                f"eval_tasks: no task data found in {where}: no task YAML names a data file; "
                f"fix: {FIX_TASKS}"
            )
        all_grams = np.concatenate(grams) if grams else np.zeros(0, np.uint64)
        all_owners = np.concatenate(owners) if owners else np.zeros(0, np.int32)
        order = np.lexsort((all_owners, all_grams))
        all_grams, all_owners = all_grams[order], all_owners[order]
        keys, starts = np.unique(all_grams, return_index=True)
        offsets = np.append(starts, len(all_grams)).astype(np.int64)
        # ~32 bits per key (about 3% of clean grams pass to the search), 8 KiB to 16 MiB.
        bits = 1 << min(max(int(len(keys) * 32).bit_length(), 16), 27)
        slots = keys & np.uint64(bits - 1)
        bitmap = np.zeros(bits // 8, dtype=np.uint8)
        bit = np.left_shift(np.uint8(1), (slots & np.uint64(7)).astype(np.uint8))
        np.bitwise_or.at(bitmap, (slots >> np.uint64(3)).astype(np.int64), bit)
        return cls(
            ngram=cfg.ngram,
            keys=keys,
            offsets=offsets,
            item_ids=all_owners,
            refs=refs,
            bitmap=bitmap,
            lengths=tuple(sorted(lengths, reverse=True)),
            files=dict(sorted(files.items())),
            too_short=too_short,
            yamls=yamls,
        )

    def matches(self, text: str) -> list[str]:
        """Refs of the items that share a gram with `text` (any text: it is normalised here),
        in index order; [] for a clean document."""
        import numpy as np

        words = tokens(text)
        if not words or not len(self.keys):
            return []
        hashes = ngrams.word_hashes(words)
        lengths = [k for k in self.lengths if k <= len(words)]
        if not lengths:
            return []
        doc = ngrams.grams(hashes, lengths)
        slots = doc & np.uint64(len(self.bitmap) * 8 - 1)
        byte = self.bitmap[slots >> np.uint64(3)]
        doc = doc[(byte >> (slots & np.uint64(7)).astype(np.uint8)) & np.uint8(1) == 1]
        if not len(doc):
            return []
        pos = np.searchsorted(self.keys, doc)
        pos[pos == len(self.keys)] = 0
        hit = np.unique(pos[self.keys[pos] == doc])
        if not len(hit):
            return []
        ids = np.unique(
            np.concatenate([self.item_ids[self.offsets[p] : self.offsets[p + 1]] for p in hit])
        )
        return [self.refs[i] for i in ids]

    def nbytes(self) -> int:
        """Memory of the arrays (what a worker receives, besides the refs)."""
        arrays = (self.keys, self.offsets, self.item_ids, self.bitmap)
        return int(sum(a.nbytes for a in arrays))


def index_inputs(inputs: dict[str, Any], cfg: DecontamConfig, ctx: Context) -> EvalIndex | None:
    """The index of the step's `eval_tasks` input, or None when the step has none."""
    given = inputs.get("eval_tasks")
    artifacts = given if isinstance(given, list) else [given] if given else []
    if not artifacts:
        return None
    index = EvalIndex.build([(a.name or a.path.name, a.path) for a in artifacts], cfg)
    ctx.log(
        f"decontamination: {index.items} eval items from {len(index.files)} task data file(s), "
        f"{cfg.ngram}-grams, action {cfg.action}"
    )
    return index


def tokens(text: str) -> tuple[str, ...]:
    """The words of `text` as the index compares them: normalised, case-folded, no punctuation."""
    return tuple(_BREAK.sub(" ", normalise(text).casefold()).split())


# --- what the task folders hold -----------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A task's doc_to_text / doc_to_target / doc_to_choice as its YAML writes them."""

    text: Any = None
    target: Any = None
    choice: Any = None


def data_files(root: Path) -> tuple[dict[Path, list[Template]], list[str]]:
    """({data file: the templates of the tasks that read it}, the YAMLs read) for a folder."""
    if not root.is_dir():
        raise StageError(f"eval_tasks input {root} is not a directory; fix: {FIX_TASKS}")
    configs, read = taskfolder.task_data(root)
    found: dict[Path, list[Template]] = {}
    for file, tasks in configs.items():
        templates = found[file] = []
        for cfg in tasks:
            template = Template(*(cfg.get(f"doc_to_{k}") for k in ("text", "target", "choice")))
            if template not in templates:
                templates.append(template)
    return found, read


def item_text(row: Any, template: Template) -> str:
    """The text of one eval item: prompt and answer where the task's templates are plain field
    names or `{{field}}` placeholders, else every string value of the row (see module doc)."""
    if isinstance(row, dict):
        text = _render(template.text, row)
        target = _render(template.target, row)
        if isinstance(target, int) and not isinstance(target, bool):  # an index into choices
            choices = _render(template.choice, row) if template.choice is not None else None
            ok = isinstance(choices, list) and 0 <= target < len(choices)
            target = choices[target] if ok else None  # type: ignore[index]
        if text is not None and target is not None:
            joined = "\n".join(_string_values([text, target]))
            if joined.strip():
                return joined
    return "\n".join(_string_values(row))


def _render(template: Any, row: dict[str, Any]) -> Any:
    """What a doc_to_* template gives for a row, or None where it cannot be followed simply."""
    if template is None:
        return ""
    if isinstance(template, taskfolder.Function):
        return None  # Python code
    if isinstance(template, list | int) and not isinstance(template, bool):
        return template  # a literal list of choices, or a constant answer index
    if not isinstance(template, str):
        return None
    if template in row:
        return row[template]  # a column name
    names = _PLACEHOLDER.findall(template)
    if "{%" in template or template.count("{{") != len(names) or not set(names) <= row.keys():
        return None  # Jinja beyond {{field}}, or a field process_docs would have added
    return _PLACEHOLDER.sub(lambda m: _plain(row[m.group(1)]), template)


def _plain(value: Any) -> str:
    if isinstance(value, int | float):
        return str(value)
    return " ".join(_string_values(value))


def _string_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _string_values(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _string_values(v)


# --- what the dataset records -------------------------------------------------------------------


def record(doc_id: str, source: str, items: Sequence[str], action: str) -> dict[str, Any]:
    """One line of decontamination.jsonl: a contaminated document and the items it contains."""
    return {"doc_id": doc_id, "source": source, "action": action, "items": list(items)}


def report(
    index: EvalIndex,
    cfg: DecontamConfig,
    documents: Iterable[Mapping[str, Any]],
    max_examples: int = MAX_EXAMPLES,
) -> dict[str, Any]:
    """dataset.json's `decontamination` record from the contaminated documents (`record` rows,
    in stream order): what was checked, how many documents per source, which items and files
    were found, and the first `max_examples` documents."""
    by_source: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    found: set[str] = set()
    examples: list[dict[str, Any]] = []
    for doc in documents:
        items = list(doc["items"])
        by_source[str(doc["source"])] += 1
        by_file.update({ref.rsplit(":", 1)[0] for ref in items})
        found.update(items)
        if len(examples) < max_examples:
            examples.append({"doc_id": doc["doc_id"], "source": doc["source"], "items": items})
    return {
        "ngram": cfg.ngram,
        "action": cfg.action,
        "min_item_words": cfg.min_item_words,
        "files": dict(index.files),
        "task_yamls": dict(index.yamls),
        "items": index.items,
        "items_too_short": index.too_short,
        "documents": sum(by_source.values()),
        "contaminated": dict(sorted(by_source.items())),
        "by_file": dict(sorted(by_file.items())),
        "items_found": len(found),
        "examples": examples,
    }


__all__ = [
    "DecontamConfig",
    "EvalIndex",
    "Template",
    "data_files",
    "item_text",
    "record",
    "report",
    "tokens",
]
