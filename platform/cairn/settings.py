"""Where Cairn keeps things, from the environment: the embedded default or a cluster's services.

| variable | default (embedded) |
| `CAIRN_HOME` | `./.cairn` |
| `CAIRN_DATABASE_URL` | `sqlite:///$CAIRN_HOME/cairn.db` (PostgreSQL in production) |
| `MLFLOW_TRACKING_URI` | `sqlite:///$CAIRN_HOME/mlflow.db`, artifacts under `$CAIRN_HOME/mlartifacts` |
| `CAIRN_STORE` | `$CAIRN_HOME/store` (any fsspec URI, e.g. `s3://bucket/cairn`) |
| `CAIRN_CHECKPOINTS` | `$CAIRN_HOME/checkpoints` (on a cluster: a path every node mounts) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Where one deployment keeps its state: its home, database, MLflow, artifact store and
    checkpoints. `Settings.from_env()` reads them from `CAIRN_HOME`, `CAIRN_DATABASE_URL`,
    `MLFLOW_TRACKING_URI`, `CAIRN_STORE` and `CAIRN_CHECKPOINTS` (defaults: `cairn.settings`)."""

    home: Path
    database_url: str
    mlflow_uri: str
    mlflow_artifacts: str
    store: str
    checkpoints: Path

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Settings:
        h = Path(home or os.environ.get("CAIRN_HOME") or ".cairn").expanduser().resolve()
        return cls(
            home=h,
            database_url=os.environ.get("CAIRN_DATABASE_URL") or f"sqlite:///{h / 'cairn.db'}",
            mlflow_uri=os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{h / 'mlflow.db'}",
            mlflow_artifacts=str(h / "mlartifacts"),
            store=os.environ.get("CAIRN_STORE") or str(h / "store"),
            checkpoints=Path(os.environ.get("CAIRN_CHECKPOINTS") or h / "checkpoints"),
        )

    def env(self) -> dict[str, str]:
        """The variables that make another process (a Ray job driver) see the same state."""
        return {
            "CAIRN_HOME": str(self.home),
            "CAIRN_DATABASE_URL": self.database_url,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "CAIRN_STORE": self.store,
            "CAIRN_CHECKPOINTS": str(self.checkpoints),
        }

    def logs_dir(self, run_id: str) -> Path:
        return self.home / "logs" / run_id

    def checkpoint_dir(self, step: str, fingerprint: str) -> Path:
        # Keyed by fingerprint: a retried or resumed step finds its own checkpoints, nothing else.
        return self.checkpoints / f"{step}-{fingerprint[:16]}"
