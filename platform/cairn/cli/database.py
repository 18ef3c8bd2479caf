"""`cairn db`: apply or revert migrations of Cairn's own database."""

from __future__ import annotations

from typing import Annotated

import typer

from cairn.cli.app import db_app, fail, out
from cairn.errors import CairnError
from cairn.settings import redact


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to CAIRN_DATABASE_URL (runs happen to do this on first use too)."""
    from cairn import db
    from cairn.settings import Settings

    url = Settings.from_env().database_url
    try:
        db.upgrade(url, revision)
    except CairnError as e:
        fail(e, False)
    out.print(f"database at {redact(url)} is at {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="target revision, e.g. base")],
) -> None:
    """Revert migrations (destroys data in the tables removed)."""
    from cairn import db
    from cairn.settings import Settings

    url = Settings.from_env().database_url
    db.downgrade(url, revision)
    out.print(f"database at {redact(url)} is at {revision}")
