"""API keys, roles and the identity of a caller.

Keys are random, shown once, and stored as their SHA-256 hash (a key has 256 bits of entropy,
so a slow hash adds nothing; lookups stay one index probe). The `api_keys` table is the read
model of the `api-key-*` event streams written by `app.access`; this module only reads it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from app.core.db import Database, JSONType, UTCDateTime, metadata

KEY_PREFIX = "dr_"


class Role(StrEnum):
    portal = "portal"  # another government portal: submits, follows what it submitted
    handler = "handler"  # bound to a unit: sees and acts on what its unit holds or reported
    dispatcher = "dispatcher"  # a district's dispatch room (区调度室): its district
    commander = "commander"  # the city command room (市总调度室): everything
    admin = "admin"
    viewer = "viewer"  # read only; optionally limited to a district


class Permission(StrEnum):
    import_ = "import"  # may give `occurred_at` (load historical ledgers)
    board = "board"  # a wall-board token: opens `/board` only, never the API (`app.board`)


api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("unit_id", sa.String(64), nullable=True),
    sa.Column("district_id", sa.String(12), nullable=True),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("permissions", JSONType, nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key_hint", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)


@dataclass(frozen=True)
class Caller:
    """Who is asking. `system` is the service itself (automatic actions)."""

    key_id: str
    name: str
    role: Role | None
    unit_id: str | None = None
    district_id: str | None = None
    source: str | None = None
    permissions: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_system(self) -> bool:
        return self.key_id == "system"

    @property
    def can_import(self) -> bool:
        return self.role is Role.admin or Permission.import_.value in self.permissions

    def has(self, *roles: Role) -> bool:
        return self.role in roles


SYSTEM = Caller(key_id="system", name="system", role=None)


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """What a listing may show of a key: enough to recognise it, not to use it."""
    return key[:7] + "…" if len(key) > 10 else "…"


# Built once: every request runs it (see `Database.fetch`).
_BY_HASH = sa.select(api_keys).where(
    api_keys.c.key_hash == sa.bindparam("digest", type_=sa.String), api_keys.c.revoked_at.is_(None)
)


async def authenticate(db: Database, presented: str, *, board: bool = False) -> Caller | None:
    """The caller a presented key belongs to, or None (unknown or revoked). A wall-board token
    (permission `board`) is a caller only where `board` is asked for: the board's pages."""
    digest = hash_key(presented)
    rows = await db.fetch(_BY_HASH, {"digest": digest})
    return caller_from_row(rows[0] if rows else None, digest, board=board)


def caller_from_row(row: Mapping[str, Any] | None, digest: str, *, board: bool = False) -> Caller | None:
    """The caller of an `api_keys` row read by the hash `digest` of the presented key among the
    keys not revoked (None: no such row, or a board token where `board` is not asked for).
    Every way of reading a key ends here (`authenticate`, and the submission's own query that
    reads the key together with what a submission refers to)."""
    if row is None or row["key_hash"] is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    if Permission.board.value in (row["permissions"] or ()) and not board:
        return None
    return Caller(
        key_id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        unit_id=row["unit_id"],
        district_id=row["district_id"],
        source=row["source"],
        permissions=frozenset(row["permissions"] or ()),
    )
