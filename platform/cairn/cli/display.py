"""Live progress for long work: a rich table on a terminal, plain lines otherwise.

The engine calls these through its `Display` protocol (`cairn.engine.progress`); it never prints.
`--json` runs use `NullDisplay` so that stdout carries nothing but the final JSON object.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

STYLE = {
    "pending": "dim",
    "running": "cyan",
    "verifying": "cyan",
    "succeeded": "green",
    "cached": "green",
    "failed": "bold red",
    "cancelled": "yellow",
}


@dataclass
class _Row:
    state: str = "pending"
    done: float = 0
    total: float | None = None
    message: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


class PlainDisplay:
    """One line per state change and log line, and progress at most every `every` seconds."""

    def __init__(self, stream: Any = None, every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._last: dict[str, float] = {}

    def _print(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=self.stream, flush=True)

    def update(
        self, step: str, state: str | None = None, progress: Any = None, message: str | None = None
    ) -> None:
        if state:
            self._print(f"{step:<12} {state}" + (f"  {message}" if message else ""))
        elif progress and time.monotonic() - self._last.get(step, 0) >= self.every:
            self._last[step] = time.monotonic()
            done, total = progress
            frac = f"{done:.0f}/{total:.0f}" if total else f"{done:.0f}"
            self._print(f"{step:<12} {frac}  {message or ''}")

    def metrics(self, step: str, values: dict[str, float], step_no: int) -> None:
        pass

    def log(self, step: str, message: str) -> None:
        self._print(f"{step:<12} | {message}")


class RichDisplay:
    """A live table of steps with progress bars; log lines scroll above it."""

    def __init__(self, steps: list[str], console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.rows = {s: _Row() for s in steps}
        self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> RichDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.update(self._table())
        self.live.__exit__(*exc)

    def _table(self) -> Table:
        t = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for col in ("step", "state", "progress", "time", ""):
            t.add_column(col)
        for name, r in self.rows.items():
            bar = ""
            if r.total:
                frac = min(1.0, r.done / r.total)
                bar = "█" * int(frac * 20) + "░" * (20 - int(frac * 20)) + f" {frac:4.0%}"
            end = r.finished or time.monotonic()
            elapsed = "" if r.state == "pending" else f"{end - r.started:5.1f}s"
            t.add_row(name, f"[{STYLE.get(r.state, '')}]{r.state}[/]", bar, elapsed, r.message[:70])
        return t

    def update(
        self, step: str, state: str | None = None, progress: Any = None, message: str | None = None
    ) -> None:
        if step not in self.rows:
            if step == "run" and message:
                self.console.print(f"[dim]{message}[/]")
            return
        r = self.rows[step]
        if state:
            if r.state == "pending" and state == "running":
                r.started = time.monotonic()
            if state in ("succeeded", "cached", "failed", "cancelled"):
                r.done = r.total or r.done
                r.finished = time.monotonic()
            r.state = state
        if progress:
            r.done, r.total = progress
        if message is not None:
            r.message = message
        self.live.update(self._table())

    def metrics(self, step: str, values: dict[str, float], step_no: int) -> None:
        pass

    def log(self, step: str, message: str) -> None:
        self.console.print(f"[dim]{step}[/] │ {message}")
