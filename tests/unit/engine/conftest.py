"""The engine tests' shared fixture: a folder with a workflow's data, where a toy run lives."""

from __future__ import annotations

import pytest


@pytest.fixture
def home(tmp_path):
    (tmp_path / "wf" / "data").mkdir(parents=True)
    (tmp_path / "wf" / "data" / "a.txt").write_text("one\ntwo\nthree\n")
    return tmp_path
