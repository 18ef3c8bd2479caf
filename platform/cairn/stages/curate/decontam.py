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
  that is a local folder, resolved as the evaluate stage resolves them (against the YAML's own
  folder, then the task folder's root). YAMLs are configs, and READMEs or code are neither. A
  Hub dataset name is not local data (evaluate rejects such tasks anyway).
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

Hashes are 64-bit and deterministic across processes (blake2b per word, a polynomial hash per
window), so an index built on the driver answers the same on every Ray worker; it is a few
numpy arrays and a list of refs, and pickles small.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cairn.errors import StageError
from cairn.stages.curate.text import normalise
from cairn.stages.evaluate.taskdir import flatten, mappings, sha256

if TYPE_CHECKING:
    import numpy as np

IGNORED_DIRS = {"__pycache__", ".ipynb_checkpoints"}  # as the evaluate stage ignores them
# `datasets` builders named as dataset_path; anything else is a local folder or a Hub dataset.
LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "xml"}
READERS = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")  # before an optional .gz
MAX_EXAMPLES = 20  # contaminated documents shown in dataset.json (all are in the JSONL)
FIX_TASKS = (
    "give the `eval_tasks` input the folder an evaluate step takes as `tasks` (task YAMLs with "
    "dataset_path: json and data_files relative to the YAML), e.g. ./evals/shakespeare"
)

_BREAK = re.compile(r"[\W_]+")  # anything but a letter or digit separates words
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")  # {{field}}, the only Jinja followed
_MASK = (1 << 64) - 1
_BASE = 0x100000001B3  # odd, so it has an inverse modulo 2**64
_LENGTH_SALT = 0x9E3779B97F4A7C15  # keeps a k-word gram apart from an n-word one
_WORDS: dict[str, int] = {}  # word -> hash, per process: corpora repeat words (Zipf)
_WORDS_MAX = 1 << 20
_POWERS: list[Any] = []  # [B**t, B**-t for t < len] mod 2**64, grown on demand


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
                files[f"{label}/{rel}"] = sha256(path)
                for n, row in read_rows(path):
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
                        item.append(_grams(_word_hashes(words), [k]))
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
        hashes = _word_hashes(words)
        lengths = [k for k in self.lengths if k <= len(words)]
        if not lengths:
            return []
        doc = _grams(hashes, lengths)
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


class _Loader(yaml.SafeLoader):
    """Safe loading that keeps lm-eval's `!function` (and any other tag) as plain text."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return _Function(loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


class _Function(str):
    """A tagged scalar (`!function utils.doc_to_text`): Python, so never a template to render."""


_Loader.add_multi_constructor("!", _tagged)


def data_files(root: Path) -> tuple[dict[Path, list[Template]], list[str]]:
    """({data file: the templates of the tasks that read it}, the YAMLs read) for a folder."""
    if not root.is_dir():
        raise StageError(f"eval_tasks input {root} is not a directory; fix: {FIX_TASKS}")
    found: dict[Path, list[Template]] = {}
    read: list[str] = []
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        rel = path.relative_to(root)
        if IGNORED_DIRS.intersection(rel.parts):
            continue
        read.append(rel.as_posix())
        doc = _load(path)
        for where, mapping in mappings(doc, ""):
            # lm-eval merges a top-level `include:` under the YAML; data paths stay relative to
            # the file that names them.
            chain = [*_includes(mapping, path, 0), (path, mapping)] if not where else []
            chain = chain or [(path, mapping)]
            merged: dict[str, Any] = {}
            for _, cfg in chain:
                merged.update(cfg)
            template = Template(*(merged.get(f"doc_to_{k}") for k in ("text", "target", "choice")))
            for yaml_path, cfg in chain:
                for field_, value in _data_refs(cfg, where):
                    for file in _resolve(value, yaml_path, root, field_):
                        known = found.setdefault(file, [])
                        if template not in known:
                            known.append(template)
    return dict(sorted(found.items())), read


def _load(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise StageError(
            f"eval_tasks: {path} is not valid YAML ({e}); fix: correct it or remove it from "
            "the task folder (lm-eval could not load that task either)"
        ) from e


def _includes(cfg: dict[str, Any], path: Path, depth: int) -> list[tuple[Path, dict[str, Any]]]:
    """The YAMLs `cfg` includes, base first; one that is missing is left out (lm-eval fails
    on it, and the task's data is still found through the YAML that names it)."""
    name = cfg.get("include")
    base = path.parent / name if isinstance(name, str) else None
    if base is None or depth > 8 or not base.is_file():
        return []
    loaded = _load(base)
    return [*_includes(loaded, base, depth + 1), (base, loaded)] if isinstance(loaded, dict) else []


def _data_refs(cfg: dict[str, Any], where: str) -> Iterator[tuple[str, str]]:
    """(field, path) of every data path one task config names."""
    kwargs = cfg.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        yield from flatten(kwargs.get("data_files"), f"{where}dataset_kwargs.data_files")
        if isinstance(kwargs.get("data_dir"), str):
            yield f"{where}dataset_kwargs.data_dir", kwargs["data_dir"]
    path = cfg.get("dataset_path")
    if isinstance(path, str) and path not in LOCAL_BUILDERS:
        yield f"{where}dataset_path", path  # a local folder if it exists, else a Hub name


def _resolve(value: str, yaml_path: Path, root: Path, where: str) -> list[Path]:
    """The files a data path names, looked for as the evaluate stage does."""
    if "://" in value:
        raise StageError(
            f"eval_tasks: {yaml_path}: {where}: '{value}' is a remote URL; decontamination (like "
            "evaluate) reads only files in the task folder; fix: download it into the folder "
            "and name it relative to the YAML"
        )
    is_dataset_path = where.endswith("dataset_path")
    resolved_root = root.resolve()
    for base in (yaml_path.parent, root):
        candidate = (base / value).resolve()
        if is_dataset_path and not candidate.is_dir():
            continue
        matches = _expand(candidate)
        if not matches:
            continue
        outside = [m for m in matches if not m.is_relative_to(resolved_root)]
        if outside:
            raise StageError(
                f"eval_tasks: {yaml_path}: {where}: '{value}' points outside the task folder "
                f"{root} ({outside[0]}); decontamination checks only the folder's files, and "
                "the evaluate stage would refuse a task whose data was not checked; fix: copy "
                "the data into the folder and name it relative to the YAML"
            )
        return [root / m.relative_to(resolved_root) for m in matches]
    if is_dataset_path:
        return []  # not a local folder: a Hub dataset name, which evaluate rejects by itself
    raise StageError(
        f"eval_tasks: {yaml_path}: {where}: '{value}' does not exist (looked next to the YAML "
        f"and at {root}); fix: put the data file in the task folder and name it relative to "
        "the YAML"
    )


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not IGNORED_DIRS.intersection(p.relative_to(path).parts)
        )
    if glob.has_magic(str(path)):
        return sorted(Path(m) for m in glob.glob(str(path), recursive=True) if Path(m).is_file())
    return [path] if path.is_file() else []


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(n, row) of every row of a data file: n is the JSONL/text line or the row (1-based)."""
    name = path.name.lower()
    suffix = next((s for s in READERS if name.endswith(s) or name.endswith(s + ".gz")), None)
    if suffix is None:
        raise StageError(
            f"eval_tasks: {path}: decontamination cannot read this kind of file (it reads "
            f"{', '.join(READERS)}, optionally .gz); fix: convert the task data to JSONL"
        )
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            yield from enumerate(pq.read_table(path).to_pylist(), 1)
            return
        raw = path.read_bytes()
        content = (gzip.decompress(raw) if name.endswith(".gz") else raw).decode("utf-8")
        if suffix == ".txt":  # as the `text` builder reads it: one row per line
            yield from ((i, {"text": line}) for i, line in enumerate(content.splitlines(), 1))
        elif suffix in (".csv", ".tsv"):
            delimiter = "\t" if suffix == ".tsv" else ","
            yield from enumerate(csv.DictReader(io.StringIO(content), delimiter=delimiter), 1)
        elif suffix == ".json" and (doc := _json_document(content)) is not None:
            yield from enumerate(_json_rows(doc), 1)
        else:  # JSON lines (the `datasets` json builder reads a .json file either way)
            for i, line in enumerate(content.splitlines(), 1):
                if line.strip():
                    yield i, json.loads(line)
    except (ValueError, OSError, EOFError) as e:  # JSONDecodeError, UnicodeDecodeError, gzip
        raise StageError(
            f"eval_tasks: cannot read {path}: {e}; fix: the task data must be valid UTF-8 "
            f"{suffix.lstrip('.').upper()} (as lm-eval reads it)"
        ) from e


def _json_document(content: str) -> Any | None:
    """A .json file parsed as one document, or None if it is JSON lines."""
    try:
        return json.loads(content)
    except ValueError:
        return None


def _json_rows(doc: Any) -> list[Any]:
    """Rows of a JSON document: an array's elements, the records under an object's only key
    ({"data": [{...}, ...]}), or else the document as one row."""
    if isinstance(doc, dict) and len(doc) == 1:
        (value,) = doc.values()
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            return value
    return doc if isinstance(doc, list) else [doc]


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
    if isinstance(template, _Function):
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


def _word_hashes(words: Sequence[str]) -> np.ndarray:
    import numpy as np

    cache = _WORDS
    if len(cache) > _WORDS_MAX:
        cache.clear()
    out = [cache.get(w) or _hash_word(w) for w in words]
    return np.array(out, dtype=np.uint64)


def _hash_word(word: str) -> int:
    h = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
    _WORDS[word] = h
    return h


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """B**t and B**-t mod 2**64 for t < n (numpy's uint64 products wrap modulo 2**64)."""
    import numpy as np

    if not _POWERS or len(_POWERS[0]) < n:
        size = max(n, 2 * len(_POWERS[0]) if _POWERS else 4096)
        up = np.cumprod(np.full(size, _BASE, dtype=np.uint64))
        down = np.cumprod(np.full(size, pow(_BASE, -1, 1 << 64), dtype=np.uint64))
        one = np.ones(1, dtype=np.uint64)
        _POWERS[:] = [np.concatenate([one, up[:-1]]), np.concatenate([one, down[:-1]])]
    return _POWERS[0], _POWERS[1]


def _grams(hashes: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """The hash of every window of k words, for each k in `lengths` (<= len(hashes)), at once.

    A polynomial hash h = sum(w[t] * B**(end - t)) over the window, computed from one prefix sum
    of w[t] * B**-t (the difference of two prefixes times B**end), then salted with k and put
    through splitmix64's finaliser so that nearby sums spread over all 64 bits. One pass of
    numpy calls per document whatever the number of lengths: short documents are many.
    """
    import numpy as np

    m = len(hashes)
    up, down = _powers(m + 1)
    prefix = np.zeros(m + 1, dtype=np.uint64)
    np.cumsum(hashes * down[:m], out=prefix[1:])
    parts = [(prefix[k:] - prefix[:-k]) * up[k - 1 : m] for k in lengths]
    g = np.concatenate(parts) if len(parts) > 1 else parts[0]
    salts = np.array([(k * _LENGTH_SALT) & _MASK for k in lengths], dtype=np.uint64)
    g ^= salts[0] if len(parts) == 1 else np.repeat(salts, [len(p) for p in parts])
    g ^= g >> np.uint64(30)
    g *= np.uint64(0xBF58476D1CE4E5B9)
    g ^= g >> np.uint64(27)
    g *= np.uint64(0x94D049BB133111EB)
    g ^= g >> np.uint64(31)
    return g


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
    "read_rows",
    "record",
    "report",
    "tokens",
]
