"""`cairn` command line: parsing and rendering only; every command calls the public API.

| module | commands |
|---|---|
| `runs.py` | validate, run, submit, status, runs, logs, cancel, resume |
| `artifacts.py` | lineage, audit, data-order, serve, stop |
| `reproduce.py` | reproduce |
| `release.py` | release sign |
| `database.py` | db upgrade, db downgrade |
| `server.py` | server, token create / list / revoke |
| `app.py` | the Typer app, `--json` output and error conventions |
| `display.py` | the live progress table (or plain lines) a run shows on stderr |
"""

from __future__ import annotations

from cairn.cli import (  # noqa: F401  (each registers its commands)
    artifacts,
    database,
    release,
    reproduce,
    runs,
    server,
)
from cairn.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
