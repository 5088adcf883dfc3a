"""Group commit: attempts that wait together are committed together, each exactly once, and
each caller hears back only once its attempt is committed (or that the commit failed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from backline.core.outage import Mode
from backline.journal import (
    Attempt,
    AttemptKind,
    Delivery,
    JournalError,
    NewAttempt,
    Outcome,
    open_journal,
)
from backline.journal.base import SqlJournal
from backline.journal.writer import AttemptWriter
from tests.harness.postgres import JournalBackend

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def call(n: int) -> NewAttempt:
    return NewAttempt(f"call:{n}", T0 + timedelta(seconds=n), AttemptKind.CALL, Mode.OUTAGE,
                      "+17205550141", "+13125550100", Outcome.ANNOUNCED,
                      delivery=Delivery.HELD)


class Gate:
    """A journal whose next commit waits until the test opens the gate, counting commits."""

    def __init__(self, journal: SqlJournal) -> None:
        self.journal = journal
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.open = threading.Event()
        self.fail_next = False

    def record_attempts(self, batch: Sequence[NewAttempt]) -> list[tuple[Attempt, bool]]:
        self.entered.set()
        self.open.wait(60)  # until the test opens it; 60 s only bounds a hang
        self.batches.append([a.key for a in batch])
        if self.fail_next:
            self.fail_next = False
            raise JournalError("disk full")
        return self.journal.record_attempts(batch)


@pytest.fixture
def gate(journal_backend: JournalBackend) -> Iterator[Gate]:
    journal = open_journal(journal_backend.url)
    yield Gate(journal)
    journal.close()


async def test_attempts_arriving_during_a_commit_share_the_next_one(gate: Gate) -> None:
    writer = AttemptWriter(gate)
    first = asyncio.create_task(writer.record(call(0)))
    assert await asyncio.to_thread(gate.entered.wait, 60)  # the first commit is under way
    rest = [asyncio.create_task(writer.record(call(n))) for n in range(1, 11)]
    await asyncio.sleep(0)  # let them queue
    assert not any(t.done() for t in [first, *rest])  # nobody hears back before the commit
    gate.open.set()
    results = await asyncio.gather(first, *rest)
    assert gate.batches == [["call:0"], [f"call:{n}" for n in range(1, 11)]]
    assert [(a.key, new) for a, new in results] == [(f"call:{n}", True) for n in range(11)]
    assert [a.key for a in gate.journal.attempts()] == [f"call:{n}" for n in range(11)]
    await writer.close()


async def test_a_key_twice_in_one_batch_is_recorded_once(gate: Gate) -> None:
    gate.open.set()
    writer = AttemptWriter(gate, linger=10.0)
    lazy = asyncio.create_task(writer.record(call(1), urgent=False))
    again = asyncio.create_task(writer.record(call(1)))
    (a, new), (b, new_again) = await asyncio.gather(lazy, again)
    assert gate.batches == [["call:1", "call:1"]]  # the urgent one took the lazy one along
    assert (new, new_again) == (True, False) and a.id == b.id
    assert len(gate.journal.attempts()) == 1
    await writer.close()


async def test_a_failed_commit_reaches_every_waiter_and_the_next_batch_still_goes(
        gate: Gate) -> None:
    gate.fail_next = True
    gate.open.set()
    writer = AttemptWriter(gate)
    with pytest.raises(JournalError):
        await writer.record(call(1))
    assert gate.journal.attempts() == []
    a, new = await writer.record(call(2))
    assert new and a.key == "call:2"
    await writer.close()


async def test_close_commits_what_is_still_waiting(gate: Gate) -> None:
    gate.open.set()
    writer = AttemptWriter(gate, linger=60.0)
    lazy = [asyncio.create_task(writer.record(call(n), urgent=False)) for n in range(3)]
    await asyncio.sleep(0)
    await writer.close()  # does not wait out the minute of linger
    assert all(t.done() for t in lazy)
    assert [a.key for a in gate.journal.attempts()] == ["call:0", "call:1", "call:2"]
