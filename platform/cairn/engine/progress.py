"""The progress seam: what the engine tells whoever watches a run (never printed by the engine).

The CLI passes a live table (a terminal) or timestamped lines (`cairn.cli.display`); `--json`
runs, the Python API and tests get `NullDisplay`, so stdout carries nothing but results.
"""

from __future__ import annotations

from typing import Any, Protocol


class Display(Protocol):
    def update(
        self,
        step: str,
        state: str | None = None,
        progress: tuple[float, float | None] | None = None,
        message: str | None = None,
    ) -> None: ...
    def metrics(self, step: str, values: dict[str, float], step_no: int) -> None: ...
    def log(self, step: str, message: str) -> None: ...


class NullDisplay:
    def update(
        self, step: str, state: str | None = None, progress: Any = None, message: str | None = None
    ) -> None:
        pass

    def metrics(self, step: str, values: dict[str, float], step_no: int) -> None:
        pass

    def log(self, step: str, message: str) -> None:
        pass
