"""The journal's schema as numbered migrations, shared by every backend.

Each migration is applied once, in order, inside a transaction, and recorded in
``schema_version``; a database newer than this code is refused rather than misread.
``{autoid}`` is the backend's auto-increment primary key type.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the foundation
        """CREATE TABLE attempts (
            id {autoid},
            key TEXT NOT NULL UNIQUE,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            mode TEXT NOT NULL,
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            outcome TEXT NOT NULL,
            text TEXT NOT NULL DEFAULT '',
            file TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '',
            node TEXT NOT NULL DEFAULT '',
            delivery TEXT NOT NULL
        )""",
        "CREATE INDEX attempts_at ON attempts (at)",
        "CREATE INDEX attempts_delivery ON attempts (delivery, id)",
        """CREATE TABLE mode_changes (
            id {autoid},
            mode TEXT NOT NULL,
            at TEXT NOT NULL,
            by_whom TEXT NOT NULL,
            via TEXT NOT NULL,
            reason TEXT NOT NULL
        )""",
        """CREATE TABLE audit_log (
            id {autoid},
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL
        )""",
    ),
)

LATEST = len(MIGRATIONS)
