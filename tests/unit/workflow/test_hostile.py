"""Tests of workflow validation against hostile and unusual files (`cairn.workflow`).

A workflow file may come from anyone, and `cairn validate`, `run` and `submit` read it with the
same validator. Each case here was a traceback, a hang, a silently wrong value or wrong advice
before: an alias bomb, a self-referencing alias, deep nesting, YAML 1.1 booleans read as
numbers, .inf/.nan, control characters and non-UTF-8 bytes without a line, a step named `null`,
odd paths (a symlink loop, `~nosuchuser`, a NUL byte, a name too long) and unknown URL schemes.
Every case checks the issue's field, line, message and fix, like `test_checks.py`.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cairn.errors import SpecError
from cairn.workflow import load_workflow, parse_workflow
from cairn.workflow.yamlload import MAX_CHARS, MAX_DEPTH, MAX_VALUES
from tests import REPO
from tests.unit.workflow.test_checks import (
    CORPUS,
    MODEL,
    Bad,
    assert_well_formed,
    cairn,
    reject,
    sources,
)

QUICKSTART = REPO / "workflows" / "quickstart.yaml"

# 357 bytes that expand to 9**9 (387 million) values if a loader follows the aliases.
BOMB = "name: t\nsteps:\n" + "".join(
    f"  {chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}" if i else '"x"'] * 9) + "]\n"
    for i in range(9)
)
# The same with merge keys: each mapping merges nine copies of the one before.
MERGE_BOMB = "name: t\nsteps:\n  l0: &l0 {k: 1}\n" + "".join(
    f"  l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * 9)}]}}\n" for i in range(1, 9)
)
# Each anchor holds the one before 10 levels down: 60 levels once the aliases are followed,
# though no line nests more than 11.
ALIAS_DEPTH = "name: t\nsteps:\n  a0: &a0 x\n" + "".join(
    f"  a{i}: &a{i} {'[' * 10}*a{i - 1}{']' * 10}\n" for i in range(1, 7)
)
# A pretrain step whose config starts on line 11 (after CORPUS + MODEL).
CONFIG = CORPUS + MODEL + "    config:\n"

CASES = [
    # --- a request the step could never use ---------------------------------------------------
    Bad(
        "gpus-for-curate",
        CORPUS + "    resources: {gpus_per_worker: 1}\n",
        "steps.corpus.resources.gpus_per_worker",
        7,
        "'curate' runs on CPUs only: a GPU would never be used",
        "remove gpus_per_worker",
    ),
    # --- denial of service: refused at once, with the line ----------------------------------
    Bad(
        "alias-bomb", BOMB, "(yaml)", 7, "aliases expand to more than 10000 values", "fewer aliases"
    ),
    Bad("merge-key-bomb", MERGE_BOMB, "(yaml)", 7, "more than 10000 values", "fewer aliases"),
    Bad(
        "alias-loop",
        "name: t\nsteps: &s\n  a: *s\n",
        "(yaml)",
        3,
        "alias *s refers to the value that holds it (a loop)",
        "write the values out",
    ),
    Bad(
        "alias-loop-in-a-list",
        "name: t\nsteps:\n  a:\n    kind: curate\n    config: &c\n      x: [1, *c]\n",
        "(yaml)",
        6,
        "alias *c refers to the value that holds it",
        "instead of *c",
    ),
    Bad(
        "deep-flow-nesting",
        "name: t\nsteps: " + "[" * 5000 + "]" * 5000 + "\n",
        "(yaml)",
        2,
        f"nested more than {MAX_DEPTH} levels deep",
        "flatten it",
    ),
    Bad(
        "deep-block-nesting",
        "name: t\nsteps:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(60)) + "",
        "(yaml)",
        51,
        "nested more than 50 levels deep",
        "flatten it",
    ),
    Bad(
        "alias-depth", ALIAS_DEPTH, "(yaml)", 8, "aliases nest values more than 50 levels", "fewer"
    ),
    Bad(
        "too-many-values",
        "name: t\nsteps:\n  a: [" + ",".join(["1"] * (MAX_VALUES + 10)) + "]\n",
        "(yaml)",
        3,
        "holds more than 10000 values",
        "check that this is the workflow file",
    ),
    # --- the file as YAML --------------------------------------------------------------------
    Bad(
        "two-documents",
        CORPUS + "---\nname: u\n",
        "(yaml)",
        7,
        "a second YAML document starts here",
        "remove the `---` line",
    ),
    Bad(
        "document-end-then-more",
        CORPUS + "...\n---\nname: u\n",
        "(yaml)",
        8,
        "a second YAML document",
        "remove the `---` line",
    ),
    Bad(
        "top-level-scalar",
        "just some words\n",
        "(top level)",
        1,
        "must be a mapping",
        "name: my-workflow",
    ),
    Bad("comments-only", "# nothing here\n", "(top level)", None, "must be a mapping", "steps:"),
    Bad(
        "nul-byte",
        "name: t\nsteps:\x00\n",
        "(syntax)",
        2,
        "character U+0000 ('\\x00') is not allowed",
        "plain text",
    ),
    Bad(
        "bell-character",
        CORPUS.replace("kind: curate", "kind: cur\x07ate"),
        "(syntax)",
        4,
        "U+0007",
        "binary file",
    ),
    Bad(
        "undefined-alias",
        CORPUS + "    config: *nope\n",
        "(syntax)",
        7,
        "found undefined alias 'nope'",
        "fix the indentation",
    ),
    Bad(
        "python-tag",  # SafeLoader's refusal: no code runs
        CORPUS + "    config: !!python/object/apply:os.system ['touch pwned']\n",
        "(yaml)",
        7,
        "the tag '!!python/object/apply:os.system' is not allowed",
        "remove it",
    ),
    Bad(
        "local-tag",
        CORPUS + "    config: {x: !secret db-password}\n",
        "(yaml)",
        7,
        "the tag '!secret' is not allowed",
        "plain text, numbers",
    ),
    Bad(
        "explicit-int-tag",
        CONFIG + "      max_steps: !!int many\n",
        "(syntax)",
        12,
        "cannot read 'many' as int",
        "quote it",
    ),
    Bad(
        "int-beyond-python",
        CONFIG + "      max_steps: " + "9" * 5000 + "\n",
        "(syntax)",
        12,
        "cannot read '99999",
        "reads as int",
    ),
    # --- keys that YAML reads as something other than a name -------------------------------------
    Bad(
        "step-named-null",
        CORPUS.replace("  corpus:", "  null:"),
        "steps.null",
        3,
        "step name null is read by YAML as null, not a name",
        "rename the step, e.g. 'train', or quote it: 'null':",
    ),
    Bad(
        "step-named-tilde",
        CORPUS.replace("  corpus:", "  ~:"),
        "steps.~",
        3,
        "step name ~ is read by YAML as null",
        "rename the step",
    ),
    Bad(
        "step-named-a-number",  # one issue: not also "step name '1' is not allowed"
        CORPUS + CORPUS.split("steps:\n", 1)[1].replace("  corpus:", "  1:"),
        "steps.1",
        7,
        "step name 1 is read by YAML as a number, not a name",
        "rename the step, e.g. 'train'",
    ),
    Bad(
        "step-named-true",
        CORPUS.replace("  corpus:", "  true:"),
        "steps.true",
        3,
        "read by YAML as a boolean",
        "quote it: 'true':",
    ),
    Bad(
        "step-key-is-a-list",
        CORPUS.replace("  corpus:", "  [a, b]:"),
        "(yaml)",
        3,
        "a key here is a list or a mapping",
        "plain name before the colon",
    ),
    Bad(
        "config-key-is-a-number",  # one issue: not also "unknown field"
        CONFIG + "      1: 2\n",
        "steps.model.config.1",
        12,
        "key 1 is read by YAML as a number, not a name",
        "quote it: '1':",
    ),
    # --- numbers: YAML 1.2 booleans, no .inf/.nan, no bool for a number --------------------------
    Bad(
        "yes-is-not-a-number",
        CONFIG + "      max_steps: yes\n",
        "steps.model.config.max_steps",
        12,
        "valid integer, unable to parse string as an integer (given: 'yes')",
        "optimizer steps to train",
    ),
    Bad(
        "true-is-not-a-number",
        CONFIG + "      max_steps: true\n",
        "steps.model.config.max_steps",
        12,
        "`max_steps` must be a whole number, not true",
        "true and false are for yes-or-no fields",
    ),
    Bad(
        "nan-learning-rate",
        CONFIG + "      lr: .nan\n",
        "steps.model.config.lr",
        12,
        "`lr` must be a finite number, not .nan",
        ".inf and .nan are not allowed",
    ),
    Bad(
        "inf-rope-theta",
        CONFIG + "      rope_theta: .inf\n",
        "steps.model.config.rope_theta",
        12,
        "`rope_theta` must be a finite number, not .inf",
        "give a finite number (RoPE base period)",
    ),
    Bad(
        "float-overflow",  # 1e400 is a float in YAML 1.2, and overflows to inf
        CONFIG + "      rope_theta: 1e400\n",
        "steps.model.config.rope_theta",
        12,
        "must be a finite number, not .inf",
        "finite number",
    ),
    Bad(
        "negative-inf",
        CONFIG + "      weight_decay: -.inf\n",
        "steps.model.config.weight_decay",
        12,
        "not -.inf",
        "finite number",
    ),
    Bad(
        "nan-in-a-tuple",
        CONFIG + "      betas: [0.9, .NaN]\n",
        "steps.model.config.betas.1",
        12,
        "`betas.1` must be a finite number, not .nan",
        "finite number",
    ),
    Bad(
        "fractional-steps",
        CONFIG + "      max_steps: 1.5\n",
        "steps.model.config.max_steps",
        12,
        "fractional part",
        "optimizer steps",
    ),
    Bad(
        "sexagesimal-is-text",  # YAML 1.1 read 1:30 as 90
        CONFIG + "      max_steps: 1:30\n",
        "steps.model.config.max_steps",
        12,
        "(given: '1:30')",
        "valid value",
    ),
    Bad(
        "bool-workers",
        CORPUS + "    resources:\n      num_workers: true\n",
        "steps.corpus.resources.num_workers",
        8,
        "`num_workers` must be a whole number, not true",
        "parallel workers",
    ),
    Bad(
        "inf-memory",
        CORPUS + "    resources:\n      memory_gb: .inf\n",
        "steps.corpus.resources.memory_gb",
        8,
        "must be a finite number",
        "memory per worker",
    ),
    Bad(
        "negative-workers",
        CORPUS + "    resources:\n      num_workers: -1\n",
        "steps.corpus.resources.num_workers",
        8,
        "greater than or equal to 1",
        ">= 1",
    ),
    Bad(
        "bool-in-a-nested-model",
        CORPUS + "    config:\n      quality:\n        min_words: false\n",
        "steps.corpus.config.quality.min_words",
        9,
        "`quality.min_words` must be a whole number, not false",
        "true and false",
    ),
    Bad(
        "nan-in-a-dict-of-models",
        CORPUS + "    config:\n      sources:\n        data.jsonl: {weight: .nan}\n",
        "steps.corpus.config.sources.data.jsonl.weight",
        9,
        "`sources.data.jsonl.weight` must be a finite number, not .nan",
        "finite number",
    ),
    # --- advice that fits the field ----------------------------------------------------------
    Bad(
        "device-pattern",
        CORPUS
        + "  ev:\n    kind: evaluate\n    inputs:\n      model: ./hf-model\n"
        + "      tasks: ./data.jsonl\n    config:\n      tasks: [hellaswag]\n      device: gpu\n",
        "steps.ev.config.device",
        14,
        "should match pattern",
        "torch device to evaluate on: cpu, cuda, cuda:N or mps",
    ),
    Bad(
        "release-name-pattern",
        "name: t\nsteps:\n  rel:\n    kind: release\n    inputs:\n      model: ./hf-model\n"
        "    config:\n      name: -bad name\n",
        "steps.rel.config.name",
        8,
        "should match pattern",
        "release name",
    ),
    Bad(
        "unknown-nested-field",
        CORPUS + "    config:\n      quality:\n        bogus: 1\n",
        "steps.corpus.config.quality.bogus",
        9,
        "unknown field",
        "known fields: min_words, max_words",
    ),
    Bad(
        "unknown-field-in-a-dict-of-models",
        CORPUS + "    config:\n      sources:\n        data.jsonl: {wieght: 2}\n",
        "steps.corpus.config.sources.data.jsonl.wieght",
        9,
        "unknown field",
        "did you mean 'weight'?",
    ),
    Bad(
        "huge-input-value",  # the message quotes a bounded part of it
        CORPUS.replace("[./data.jsonl]", "{" + ", ".join(f"k{i}: {i}" for i in range(500)) + "}"),
        "steps.corpus.inputs.sources",
        6,
        "not {'k0': 0, 'k1': 1",
        "<step>.<output>",
    ),
    Bad(
        "huge-scalar",  # 500,000 characters on one line, echoed in 60
        CORPUS.replace("kind: curate", "kind: " + "k" * 500_000),
        "steps.corpus.kind",
        4,
        "unknown stage kind 'kkkkk",
        "use one of: curate",
    ),
    Bad(
        "huge-step-name",
        CORPUS.replace("  corpus:", "  " + "S" * 1000 + ":"),
        "steps." + "S" * 59 + "…",
        3,
        "is not allowed",
        "lowercase letters",
    ),
    # --- external sources --------------------------------------------------------------------
    Bad(
        "unknown-url-scheme",
        CORPUS.replace("./data.jsonl", "foo://bucket/x"),
        "steps.corpus.inputs.sources.0",
        6,
        "unknown URL scheme 'foo://' in 'foo://bucket/x'",
        "s3://, gs://",
    ),
    Bad(
        "url-scheme-typo",
        CORPUS.replace("./data.jsonl", "htps://example.com/x.jsonl"),
        "steps.corpus.inputs.sources.0",
        6,
        "unknown URL scheme 'htps://'",
        "did you mean 'https'?",
    ),
    Bad(
        "unknown-scheme-in-a-chain",
        CORPUS.replace("./data.jsonl", "simplecache::foo://bucket/x"),
        "steps.corpus.inputs.sources.0",
        6,
        "unknown URL scheme 'foo://'",
        "local path",
    ),
    Bad(
        "unknown-user",
        CORPUS.replace("./data.jsonl", "~no-such-user-cairn/x.jsonl"),
        "steps.corpus.inputs.sources.0",
        6,
        "cannot expand '~no-such-user-cairn'",
        "write the full path",
    ),
    Bad(
        "nul-in-a-path",
        CORPUS.replace("[./data.jsonl]", '["./data\\0.jsonl"]'),
        "steps.corpus.inputs.sources.0",
        6,
        "contains a NUL character",
        "remove the \\0",
    ),
    Bad(
        "name-too-long",
        CORPUS.replace("./data.jsonl", "./" + "x" * 300 + ".jsonl"),
        "steps.corpus.inputs.sources.0",
        6,
        "longer than the filesystem allows",
        "shorten",
    ),
    Bad(
        "symlink-loop",
        CORPUS.replace("./data.jsonl", "./loop-a"),
        "steps.corpus.inputs.sources.0",
        6,
        "source './loop-a' is a symbolic link that leads back to itself",
        "point the link at the data",
    ),
    Bad(
        "absolute-symlink-loop",
        CORPUS.replace("./data.jsonl", "{workdir}/loop-b"),
        "steps.corpus.inputs.sources.0",
        6,
        "symbolic link that leads back to itself",
        "point the link at the data",
    ),
    Bad(
        "path-through-a-file",
        CORPUS.replace("./data.jsonl", "./data.jsonl/inside"),
        "steps.corpus.inputs.sources.0",
        6,
        "does not exist",
        "fix the path",
    ),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """What the cases refer to: raw data, an HF model folder, and two symlink loops."""
    sources(tmp_path)
    (tmp_path / "loop-a").symlink_to("loop-a")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-c")
    (tmp_path / "loop-c").symlink_to(tmp_path / "loop-b")
    return tmp_path


def test_there_are_many_hostile_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_workflow_is_refused_precisely(case: Bad, workdir: Path) -> None:
    path = workdir / "wf.yaml"
    path.write_text(case.text.replace("{workdir}", str(workdir)))
    err = reject(path)
    assert_well_formed(err, path)
    shown = "\n".join(map(str, err.issues))
    assert len(err.issues) == case.n, shown
    hits = [i for i in err.issues if i.field == case.field and case.message in i.message]
    assert hits, f"no issue on {case.field!r} saying {case.message!r}; got:\n{shown}"
    issue = hits[0]
    assert issue.line == case.line, shown
    assert case.fix in issue.fix, shown
    assert len(str(err)) < 2000, "a message must not echo a huge value back"
    assert not (workdir / "pwned").exists()


def test_bombs_are_small_files() -> None:
    # The point of the bomb cases: a few hundred bytes, not a big file refused for its size.
    assert len(BOMB) < 600 and len(MERGE_BOMB) < 600


# --- whole-file problems, before YAML -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "line", "byte"),
    [
        (CORPUS.encode().replace(b"kind: curate", b"kind: cur\xe9ate"), 4, "0xe9"),  # Latin-1
        (b"name: t\nsteps:\n  a: \xff\xfe\n", 3, "0xff"),
        ("name: t\n".encode("utf-16"), 1, "0xff"),  # UTF-16, BOM first
        (bytes(range(256)) * 4, 2, "0x80"),  # binary garbage: a \n before 0x80
    ],
    ids=["latin-1", "stray-bytes", "utf-16", "binary"],
)
def test_bytes_that_are_not_utf8_are_named_with_their_line(
    data: bytes, line: int, byte: str, tmp_path: Path
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes(data)
    (issue,) = reject(path).issues
    assert (issue.file, issue.line, issue.field) == (str(path), line, "(file)")
    assert issue.message.startswith(f"byte {byte} is not UTF-8 text")
    assert "save the file as UTF-8" in issue.fix


def test_a_file_over_the_size_limit_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(CORPUS + "# " + "x" * MAX_CHARS + "\n")
    (issue,) = reject(path).issues
    assert (issue.line, issue.field) == (None, "(file)")
    assert "over 1 MiB" in issue.message
    assert "workflow file" in issue.fix
    # The same limit holds for text handed to the API directly.
    with pytest.raises(SpecError) as info:
        parse_workflow(CORPUS + "#" * MAX_CHARS, path)
    assert "a workflow file is at most 1 MiB" in info.value.issues[0].message


def test_a_folder_given_as_the_workflow(tmp_path: Path) -> None:
    (issue,) = reject(tmp_path).issues
    assert (issue.message, issue.field) == ("is a folder", "(file)")
    assert "YAML file" in issue.fix


def test_an_unreadable_source_is_an_issue_not_a_traceback(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, whom permissions do not stop: make the OS say no for one file.
    secret = workdir / "secret.jsonl"
    secret.write_text("{}\n")
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        if self == secret:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)
    path = workdir / "wf.yaml"
    path.write_text(CORPUS.replace("./data.jsonl", "./secret.jsonl"))
    (issue,) = reject(path).issues
    assert (issue.line, issue.field) == (6, "steps.corpus.inputs.sources.0")
    assert issue.message == (
        f"source './secret.jsonl' cannot be looked at: permission denied ({secret})"
    )
    assert "readable" in issue.fix


# gs:// (gcsfs): s3fs is part of the install now (the s3 extra).
@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_a_known_scheme_whose_package_is_missing_names_it(workdir: Path) -> None:
    path = workdir / "wf.yaml"
    path.write_text(CORPUS.replace("./data.jsonl", "gs://bucket/corpus/"))
    (issue,) = reject(path).issues
    assert issue.line == 6
    assert issue.message.startswith("reading 'gs://' needs a package that is not installed")
    assert issue.fix == "pip install gcsfs"


# --- what still loads, and how --------------------------------------------------------------------


def test_yaml_12_scalars(workdir: Path) -> None:
    """`yes`/`on` are text and `010` is ten (YAML 1.2), while true/false, .5, 1e-3, 0x10 and
    merge keys read as they always did; a yes/no field still takes `yes` and `off`."""
    path = workdir / "wf.yaml"
    path.write_text(
        "name: t\nversion: 2024-01-01\nsteps:\n"
        "  corpus:\n    kind: curate\n    inputs:\n      sources: [./data.jsonl]\n"
        "    cache: off\n    config: &cfg\n      min_chars: 010\n      max_chars: 0x10\n"
        "      pii: yes\n      dedup: FALSE\n"
        "  again:\n    kind: curate\n    inputs:\n      sources: [./data.jsonl]\n"
        "    cache: yes\n    config:\n      <<: *cfg\n      max_chars: 1e3\n"
        "  model:\n    kind: pretrain\n    inputs:\n      dataset: corpus.dataset\n"
        "    config:\n      lr: 1e-3\n      min_lr_ratio: .5\n"
    )
    wf = load_workflow(path)
    assert wf.version == "2024-01-01"  # a date in YAML 1.1, text in 1.2
    corpus, again, model = wf.steps["corpus"], wf.steps["again"], wf.steps["model"]
    assert (corpus.config.min_chars, corpus.config.max_chars) == (10, 16)
    assert (corpus.config.pii, corpus.config.dedup, corpus.cache) == (True, False, False)
    # The merge key brings `cfg` in; the step's own max_chars wins, and is not "given twice".
    assert (again.config.min_chars, again.config.max_chars, again.cache) == (10, 1000, True)
    assert (model.config.lr, model.config.min_lr_ratio) == (0.001, 0.5)


def test_bom_and_crlf_are_fine(workdir: Path) -> None:
    path = workdir / "wf.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + CORPUS.replace("\n", "\r\n").encode())
    assert load_workflow(path).order() == ["corpus"]


def test_aliases_within_the_limit_are_followed(workdir: Path) -> None:
    """Aliases are refused only past the limit: nine steps sharing one config is fine."""
    steps = "".join(
        f"  s{i}:\n    kind: curate\n    inputs:\n      sources: [./data.jsonl]\n"
        f"    config: {'&c {min_chars: 3}' if i == 0 else '*c'}\n"
        for i in range(9)
    )
    path = workdir / "wf.yaml"
    path.write_text("name: t\nsteps:\n" + steps)
    wf = load_workflow(path)
    assert [s.config.min_chars for s in wf.steps.values()] == [3] * 9


# --- the command line: refused fast, in bounded memory, leaving nothing behind -------------------

# Runs a command and prints its peak resident memory (KiB on Linux): RUSAGE_CHILDREN of this
# launcher covers exactly the one child, unlike the test process's, which has had many.
LAUNCH = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def validate_measured(path: Path, home: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    env = {k: v for k, v in os.environ.items() if k not in ("CAIRN_DATABASE_URL", "RAY_ADDRESS")}
    env["CAIRN_HOME"] = str(home)
    res = subprocess.run(
        [sys.executable, "-c", LAUNCH, sys.executable, "-m", "cairn", "validate", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard: a bomb that expands would run until killed
    )
    peak = int(res.stderr.rsplit("peak_kib ", 1)[1].split()[0])
    return res, peak


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_validate_refuses_an_alias_bomb_in_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    home = tmp_path / "home"
    res, bomb_kib = validate_measured(bomb, home)
    assert res.returncode == 2, res.stderr
    said = " ".join(res.stderr.split())  # the console wraps long lines where the path ends
    assert "YAML aliases expand to more than 10000 values (an alias bomb?)" in said
    assert "fix: write the values out, or use fewer aliases" in said
    assert f"{bomb}:7" in res.stderr
    assert "Traceback" not in res.stderr
    assert not home.exists()
    # The peer: a normal file. The bomb must cost no more than it (Python, Cairn's imports),
    # and stay under the issue's 100 MB.
    ok, normal_kib = validate_measured(QUICKSTART, home)
    assert ok.returncode == 0, ok.stderr
    assert bomb_kib < normal_kib + 10 * 1024, (bomb_kib, normal_kib)
    assert bomb_kib < 100 * 1024, bomb_kib


@pytest.mark.parametrize(
    ("command", "kind"),
    [("run", "bomb"), ("validate", "scheme"), ("run", "scheme")],  # validate bomb: above
)
def test_hostile_workflow_leaves_no_cairn_home(command: str, kind: str, tmp_path: Path) -> None:
    """Refused before anything is set up: no CAIRN_HOME, no database, no Ray (an unknown URL
    scheme used to pass validation and crash `run` after Ray had started)."""
    path = tmp_path / "wf.yaml"
    if kind == "bomb":
        path.write_text(BOMB)
    else:
        (tmp_path / "data.jsonl").write_text('{"text": "x"}\n')
        path.write_text(CORPUS.replace("./data.jsonl", "foo://bucket/x"))
    home = tmp_path / "home"
    res = cairn([command, str(path), "--json"], cwd=tmp_path, home=home)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    (issue,) = json.loads(res.stdout)["issues"]
    assert issue["file"] == str(path)
    assert issue["line"] == (7 if kind == "bomb" else 6)
    assert issue["fix"]
    assert not home.exists()
    assert not (tmp_path / ".cairn").exists()
