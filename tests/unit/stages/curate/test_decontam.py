"""Tests of curate's decontamination index: which task files it reads, what it calls a match.

The index is built from small task folders written here (and from the shipped Shakespeare suite)
and asked about training documents with eval items planted in them: verbatim, re-cased and
re-spaced, cut down to one n-gram, or sharing only phrases shorter than n words. Every test runs
in milliseconds; the evaluate stage's side of the gate is in test_evaluate.py.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from cairn.errors import StageError
from cairn.stages.curate import decontam
from cairn.stages.curate.decontam import DecontamConfig, EvalIndex
from tests import REPO

SUITE = REPO / "workflows" / "evals" / "shakespeare"

QA_YAML = """task: qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/qa.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
"""
QA = [
    {
        "id": "q-1",
        "question": "Which river did the legions cross on the morning the senate fell silent?",
        "answer": "The Rubicon",
    },
    {"id": "q-2", "question": "Who counts the quiet stars?", "answer": "the old astronomer"},
    {"id": "q-3", "question": "Name it", "answer": "no"},
]
CLOZE = [
    {"context": "Shall I compare thee to a summer's day? Thou art more", "choices": ["lovely"]},
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A task folder: a YAML whose data sits in a subfolder, a group YAML with an inline task
    over a JSON array, a README and a stray JSONL no YAML names."""
    root = tmp_path / "evals"
    root.mkdir()
    (root / "qa.yaml").write_text(QA_YAML)
    write_jsonl(root / "data" / "qa.jsonl", QA)
    (root / "group.yaml").write_text(
        "group: suite\ntask:\n  - qa\n  - task: cloze\n    dataset_path: json\n"
        "    dataset_kwargs: {data_files: cloze.json}\n"
        "    process_docs: !function utils.process\n"
    )
    (root / "cloze.json").write_text(json.dumps(CLOZE))
    (root / "README.md").write_text("Which river did the legions cross on the morning? " * 3)
    write_jsonl(root / "notes.jsonl", [{"text": "a stray file that no task reads at all, ever"}])
    return root


def build(folder: Path, **cfg) -> EvalIndex:
    return EvalIndex.build([("./evals", folder)], DecontamConfig(**cfg))


def test_only_files_named_by_task_yamls_are_data_with_their_sha256(folder: Path):
    index = build(folder)
    assert index.files == {
        "./evals/cloze.json": sha256(folder / "cloze.json"),
        "./evals/data/qa.jsonl": sha256(folder / "data" / "qa.jsonl"),
    }
    assert index.yamls == {"./evals": ["group.yaml", "qa.yaml"]}
    # q-3 ("Name it" / "no": 3 words) is under min_item_words; the other two rows of qa.jsonl
    # and the one of cloze.json are indexed.
    assert index.items == 3 and index.too_short == 1
    assert index.refs == [
        "./evals/cloze.json:1",
        "./evals/data/qa.jsonl:1",
        "./evals/data/qa.jsonl:2",
    ]


def test_items_are_prompt_and_answer_where_the_templates_are_simple(folder: Path):
    files, _ = decontam.data_files(folder)
    qa = files[folder / "data" / "qa.jsonl"]
    assert qa == [decontam.Template("{{question}}", "{{answer}}", None)]
    assert decontam.item_text(QA[1], qa[0]) == "Who counts the quiet stars?\nthe old astronomer"
    # A multiple-choice target is an index into the choices; the id and the title stay out.
    mc = decontam.Template("{{ context }}", "label", "choices")
    row = {
        "id": "nw-1",
        "play": "Richard III",
        "context": "Now is the",
        "choices": ["a", "b"],
        "label": 1,
    }
    assert decontam.item_text(row, mc) == "Now is the\nb"
    # Templates that need Python or Jinja logic fall back to every string value of the row.
    cloze = files[folder / "cloze.json"]
    assert decontam.item_text(CLOZE[0], cloze[0]) == CLOZE[0]["context"] + "\nlovely"
    logic = decontam.Template("{% if context %}{{context}}{% endif %}", "label", "choices")
    assert decontam.item_text(row, logic) == "nw-1\nRichard III\nNow is the\na\nb"
    assert decontam.item_text(row, decontam.Template("{{missing}}", "label", "choices")).startswith(
        "nw-1"
    )


def test_includes_are_followed_as_lm_eval_follows_them(tmp_path: Path):
    """`include:` is one path or a list, relative to the including YAML, merged in order; a data
    path stays relative to the YAML that names it (the evaluate stage reads them the same way)."""
    root = tmp_path / "evals"
    (root / "base").mkdir(parents=True)
    (root / "base" / "_qa.yaml").write_text(
        "dataset_path: json\ndataset_kwargs: {data_files: {test: qa.jsonl}}\n"
        "doc_to_text: '{{question}}'\n"
    )
    (root / "base" / "_target.yaml").write_text("doc_to_target: '{{answer}}'\n")
    write_jsonl(root / "base" / "qa.jsonl", QA)
    (root / "qa.yaml").write_text("task: qa\ninclude: [base/_qa.yaml, base/_target.yaml]\n")
    files, read = decontam.data_files(root)
    assert read == ["base/_qa.yaml", "base/_target.yaml", "qa.yaml"]
    assert files == {
        root / "base" / "qa.jsonl": [
            decontam.Template("{{question}}", None, None),  # base/_qa.yaml read on its own
            decontam.Template("{{question}}", "{{answer}}", None),  # qa.yaml, both included
        ]
    }


def test_a_planted_item_is_caught_verbatim_and_re_cased_and_re_spaced(folder: Path):
    index = build(folder)
    question = QA[0]["question"]
    assert index.matches(f"Notes from the lecture. {question} {QA[0]['answer']}.") == [
        "./evals/data/qa.jsonl:1"
    ]
    messy = "WHICH  river did,\nthe LEGIONS cross   on the morning -- the senate"
    assert index.matches("Some prose first.\n\n" + messy) == ["./evals/data/qa.jsonl:1"]
    # One window of exactly n words is enough; n-1 words are not.
    words = question.split()
    assert index.matches(" ".join(words[2:10])) == ["./evals/data/qa.jsonl:1"]
    assert index.matches(" ".join(words[2:9])) == []
    # An item of a JSON array named by an inline task of a group, by its row number.
    assert index.matches("shall i compare thee to a summer's day, thou art more lovely") == [
        "./evals/cloze.json:1"
    ]


def test_short_common_phrases_and_unread_files_do_not_match(folder: Path):
    index = build(folder)
    # Shares "which river did the legions", "the morning", "the senate": all under 8 words.
    prose = (
        "Which river did the legions reach first? On the morning after, the senate met, "
        "and the morning was cold; the legions cross rivers often."
    )
    assert index.matches(prose) == []
    assert index.matches("a stray file that no task reads at all, ever") == []  # notes.jsonl
    assert index.matches("") == [] and index.matches("!!! ...") == []


def test_items_shorter_than_n_match_whole_and_tiny_ones_are_skipped(folder: Path):
    # q-2 is 8 words, question and answer; at ngram=12 it is a short item and must appear whole.
    long_n = build(folder, ngram=12)
    assert long_n.lengths == (12, 8)
    whole = "Who counts the quiet stars? The old astronomer."
    assert long_n.matches("He asked: " + whole + " And left.") == ["./evals/data/qa.jsonl:2"]
    assert long_n.matches("Who counts the quiet stars? Nobody.") == []
    assert long_n.matches("the quiet stars. The old astronomer") == []
    # q-3 is "Name it" / "no": 3 words, checked whole only when min_item_words allows it.
    assert build(folder).matches("Name it: no.") == []
    loose = build(folder, min_item_words=3)
    assert loose.items == 4 and loose.too_short == 0
    assert loose.matches("Then she said: name it -- no!") == ["./evals/data/qa.jsonl:3"]
    assert loose.matches("name it now") == []


def test_the_index_pickles_small_and_answers_the_same(folder: Path):
    index = build(folder)
    again = pickle.loads(pickle.dumps(index))
    text = QA[0]["question"]
    assert again.matches(text) == index.matches(text) == ["./evals/data/qa.jsonl:1"]
    assert again.files == index.files

    suite = EvalIndex.build([("./evals/shakespeare", SUITE)], DecontamConfig())
    assert sorted(suite.files) == [
        f"./evals/shakespeare/{name}.jsonl" for name in ("finish_line", "heldout", "next_word")
    ]
    # Every row of the three files but five cloze lines of under 4 words with their answer.
    assert suite.items == 393 and suite.too_short == 5
    blob = pickle.dumps(suite)
    assert len(blob) < 1_000_000  # ~19k n-grams: 8-byte keys, offsets and item ids, plus refs
    row = json.loads((SUITE / "heldout.jsonl").read_text().splitlines()[5])
    # The passage also holds a next_word cloze line from the same speech: both are found.
    assert pickle.loads(blob).matches(row["text"][200:600]) == [
        "./evals/shakespeare/heldout.jsonl:6",
        "./evals/shakespeare/next_word.jsonl:190",
    ]


def test_hashes_do_not_depend_on_the_process(folder: Path, tmp_path: Path):
    """Workers are other processes: Python's hash() is salted per process, ours must not be."""
    import subprocess
    import sys

    index = build(folder)
    path = tmp_path / "index.pkl"
    path.write_bytes(pickle.dumps(index))
    code = (
        "import pickle, sys; from cairn.stages.curate import decontam; "
        "ix = pickle.load(open(sys.argv[1], 'rb')); "
        "print(ix.matches(sys.argv[2]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), QA[0]["question"]],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip() == "['./evals/data/qa.jsonl:1']"


def test_broken_task_folders_fail_naming_the_file_and_fix(folder: Path, tmp_path: Path):
    (folder / "data" / "qa.jsonl").unlink()
    with pytest.raises(
        StageError,
        match=r"qa.yaml: dataset_kwargs.data_files.test: 'data/qa.jsonl' does not exist.*fix:",
    ):
        build(folder)

    outside = tmp_path / "outside.jsonl"
    write_jsonl(outside, QA)
    (folder / "qa.yaml").write_text(QA_YAML.replace("data/qa.jsonl", str(outside)))
    with pytest.raises(StageError, match="points outside the task folder.*fix: copy"):
        build(folder)

    (folder / "qa.yaml").write_text(QA_YAML.replace("data/qa.jsonl", "data/qa.xlsx"))
    (folder / "data" / "qa.xlsx").write_bytes(b"PK")
    with pytest.raises(StageError, match="cannot read this kind of file.*convert"):
        build(folder)

    (folder / "qa.yaml").write_text(QA_YAML)
    (folder / "data" / "qa.jsonl").write_text('{"question": "ok"}\n{not json\n')
    with pytest.raises(StageError, match=r"cannot read .*qa.jsonl"):
        build(folder)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("nothing here")
    with pytest.raises(StageError, match="no task data found.*fix:"):
        EvalIndex.build([("./empty", empty)], DecontamConfig())


def test_config_rejects_unknown_fields_and_min_words_above_n():
    with pytest.raises(ValidationError, match="extra"):
        DecontamConfig(ngrams=8)
    with pytest.raises(ValidationError, match="min_item_words"):
        DecontamConfig(ngram=5, min_item_words=6)
    with pytest.raises(ValidationError):
        DecontamConfig(action="drop")
    assert DecontamConfig().ngram == 8 and DecontamConfig().action == "remove"


def test_report_counts_documents_per_source_and_file(folder: Path):
    index = build(folder)
    cfg = DecontamConfig(action="flag")
    docs = [
        decontam.record("d1", "plays", ["./evals/data/qa.jsonl:1"], cfg.action),
        decontam.record("d2", "plays", ["./evals/data/qa.jsonl:1", "./evals/cloze.json:1"], "flag"),
        decontam.record("d3", "poems", ["./evals/cloze.json:1"], cfg.action),
    ]
    out = decontam.report(index, cfg, docs, max_examples=2)
    assert out["ngram"] == 8 and out["action"] == "flag" and out["items"] == 3
    assert out["files"] == index.files
    assert out["documents"] == 3
    assert out["contaminated"] == {"plays": 2, "poems": 1}
    assert out["by_file"] == {"./evals/cloze.json": 2, "./evals/data/qa.jsonl": 2}
    assert out["items_found"] == 2
    assert [e["doc_id"] for e in out["examples"]] == ["d1", "d2"]
    assert docs[1] == {
        "doc_id": "d2",
        "source": "plays",
        "action": "flag",
        "items": ["./evals/data/qa.jsonl:1", "./evals/cloze.json:1"],
    }
    json.dumps(out)  # it goes into dataset.json as it is
