"""API tokens for `cairn server`: created, verified, listed and revoked in Cairn's database.

A token is `cairn_` + 43 URL-safe characters (256 random bits), shown once when created; the
database keeps its sha256 only, so a leaked database does not leak a usable token. Roles nest:
a viewer reads, a submitter also submits and cancels or resumes its own runs, an admin does
everything (tokens, anyone's runs). Creating and revoking are recorded in the event log.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cairn.db.models import ApiToken, Event, utcnow
from cairn.engine.views import iso
from cairn.errors import CairnError

ROLES = ("viewer", "submitter", "admin")
PREFIX = "cairn_"
TOUCH_EVERY = timedelta(minutes=1)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a token's name and role."""

    name: str
    role: str

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(s: Session, name: str, role: str, by: str | None = None) -> str:
    """A new token's secret (the only time it exists in clear)."""
    if role not in ROLES:
        raise CairnError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if not NAME.match(name):
        raise CairnError(
            f"token name {name!r}: use letters, digits and _ . @ - (up to 128, starting with a "
            "letter or digit)"
        )
    if s.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise CairnError(f"a token named {name!r} exists; pick another name or revoke it first")
    secret = PREFIX + secrets.token_urlsafe(32)
    s.add(ApiToken(name=name, role=role, secret_sha256=digest(secret), created_by=by))
    s.add(
        Event(
            type="token_created",
            message=f"token {name} ({role}) created by {by or 'the command line'}",
            data={"by": by, "token": name, "role": role},
        )
    )
    return secret


def verify(s: Session, secret: str) -> Principal | None:
    """The principal of a live token, or None (unknown, malformed or revoked). Its last use is
    recorded, at most once a minute: a request must not cost a database write."""
    if not secret.startswith(PREFIX) or len(secret) > 100:
        return None
    row = s.scalar(select(ApiToken).where(ApiToken.secret_sha256 == digest(secret)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    last = row.last_used_at
    if last is None or now - (last if last.tzinfo else last.replace(tzinfo=UTC)) > TOUCH_EVERY:
        row.last_used_at = now
    return Principal(row.name, row.role)


def listing(s: Session) -> list[dict[str, object]]:
    rows = s.scalars(select(ApiToken).order_by(ApiToken.created_at))
    return [
        {
            "name": r.name,
            "role": r.role,
            "created_at": iso(r.created_at),
            "created_by": r.created_by,
            "last_used_at": iso(r.last_used_at),
            "revoked": r.revoked_at is not None,
        }
        for r in rows
    ]


def revoke(s: Session, name: str, by: str | None = None) -> None:
    row = s.scalar(select(ApiToken).where(ApiToken.name == name))
    if row is None:
        raise CairnError(f"no token named {name!r}; see `cairn token list`")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        s.add(
            Event(
                type="token_revoked",
                message=f"token {name} revoked by {by or 'the command line'}",
                data={"by": by, "token": name},
            )
        )


def has_admin(s: Session) -> bool:
    return (
        s.scalar(select(ApiToken.id).where(ApiToken.role == "admin", ApiToken.revoked_at.is_(None)))
        is not None
    )
