"""The import-linter contracts in pyproject.toml: the real tree keeps them, and they do catch.

Each contract is checked on the package as it is (one `lint-imports` run, read per contract).
Then, on a copy of `platform/cairn` in tmp_path, a stage module is made to import the engine:
`stages-use-only-the-sdk` must then fail, naming the import, where it held on the same copy a
moment before (so the failure is that line's, and the copy is what was linted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS: dict[str, dict[str, Any]] = {
    c["id"]: c for c in tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
}


def lint(platform: Path, config: Path, cache: Path, *contracts: str) -> subprocess.CompletedProcess:
    """`lint-imports` on the `cairn` package under `platform`, with the contracts in `config`."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"no {LINT_IMPORTS}: install import-linter in this environment")
    args = [str(LINT_IMPORTS), str(config), "--no-logo", "--cache-dir", str(cache)]
    for c in contracts:
        args += ["--contract", c]
    return subprocess.run(
        args,
        cwd=config.parent,
        # Wide, plain output: each contract's verdict on one line.
        env={**os.environ, "PYTHONPATH": str(platform), "NO_COLOR": "1", "COLUMNS": "500"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = lint(REPO / "platform", PYPROJECT, tmp_path_factory.mktemp("import-linter-cache"))
    assert "Analyzed" in out.stdout, out.stdout + out.stderr  # it ran and read the package
    return out.stdout


def test_the_contracts_are_the_ones_these_tests_know() -> None:
    assert set(CONTRACTS) == {
        "stages-use-only-the-sdk",
        "nothing-imports-the-cli",
        "cli-calls-the-api",
        "leaves-are-leaves",
        "no-cycles",
    }


@pytest.mark.parametrize("contract", list(CONTRACTS))
def test_the_real_tree_keeps_every_contract(real_tree: str, contract: str) -> None:
    name = CONTRACTS[contract]["name"]
    assert f"{name} KEPT" in real_tree, real_tree


def test_a_stage_importing_the_engine_breaks_the_sdk_contract(tmp_path: Path) -> None:
    platform = tmp_path / "platform"
    shutil.copytree(
        REPO / "platform" / "cairn",
        platform / "cairn",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    config = tmp_path / "pyproject.toml"
    shutil.copy(PYPROJECT, config)
    contract = "stages-use-only-the-sdk"
    name = CONTRACTS[contract]["name"]

    before = lint(platform, config, tmp_path / "cache-before", contract)
    assert before.returncode == 0 and f"{name} KEPT" in before.stdout, before.stdout

    stage = platform / "cairn" / "stages" / "serve" / "config.py"
    stage.write_text(stage.read_text() + "\nfrom cairn.engine import runs  # noqa\n")
    after = lint(platform, config, tmp_path / "cache-after", contract)
    assert after.returncode != 0
    assert f"{name} BROKEN" in after.stdout, after.stdout
    assert "cairn.stages is not allowed to import cairn.engine:" in after.stdout
    assert "cairn.stages.serve.config -> cairn.engine.runs" in after.stdout
