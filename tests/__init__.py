"""Cairn's tests, laid out as the package: tests/unit/<package>/ mirrors platform/cairn/<package>/,
tests/integration/ runs the real parts (Ray, MLflow, SQLite, PostgreSQL, vLLM) end to end."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
