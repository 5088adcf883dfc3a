"""How the journal's SQL rows and times read and write, shared by its stores (``attempts``,
``alerts``, ``delivery``, ``replies``, ...), which import this module and never ``base``: that
import was the journal's cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from backline.core.outage import Mode
from backline.core.records import Attempt, AttemptKind, Delivery, Outcome, Pruned

_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def to_text(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("journal times must be timezone-aware")
    return at.astimezone(UTC).strftime(_TIME)


def from_text(text: str) -> datetime:
    return datetime.strptime(text, _TIME).replace(tzinfo=UTC)


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int = ..., /) -> list[Any]: ...


def attempt_of(row: Sequence[Any]) -> Attempt:
    """An attempt from its row, in the table's column order (``SELECT *``)."""
    (id_, key, at, kind, mode, sender, recipient, outcome, text, file, detail, node,
     delivery, sender_raw, pruned_at, pruned_days) = row[:16]
    return Attempt(int(id_), key, from_text(at), AttemptKind(kind), Mode(mode), sender,
                   recipient, Outcome(outcome), text, file, detail, node, Delivery(delivery),
                   sender_raw,
                   Pruned(from_text(pruned_at), int(pruned_days)) if pruned_at else None)
