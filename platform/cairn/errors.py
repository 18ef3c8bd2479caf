"""User-facing errors.

Every error Cairn shows a user says where the problem is (file, line, field) and what to do about
it. The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class CairnError(Exception):
    """An error the user can fix. `str()` is the full message shown to them.

    `run_id` names the run the error ended, when one had started (the CLI prints it, so a
    script's `--json` reader can still find the run's steps and logs)."""

    run_id: str | None = None


@dataclass
class SpecIssue:
    """One problem found in a workflow file."""

    file: str
    line: int | None
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}\n    fix: {self.fix}"


@dataclass
class SpecError(CairnError):
    """A workflow file failed validation. Carries every issue found, not just the first."""

    issues: list[SpecIssue] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.issues)
        head = f"workflow is invalid ({n} problem{'s' if n != 1 else ''}):"
        return "\n".join([head, *(f"  {i}" for i in self.issues)])


class StageError(CairnError):
    """A stage rejected its input or configuration at run time (bad data, not a bug)."""


class StepCancelled(CairnError):
    """Raised inside a stage when its run was cancelled."""


class NotFound(CairnError):
    """What was asked for (a run, an artifact, a step's log) does not exist (HTTP 404)."""
