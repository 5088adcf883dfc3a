"""Group commit for attempts: whatever is waiting goes to disk in one transaction.

Every commit of the journal is durable (an fsync on SQLite, a WAL flush on PostgreSQL), and
a commit per call was the largest part of the controller's own work per call in
bench/calls.py.  Attempts that arrive while a commit is under way wait for the next one, and
share it; so under load one commit carries many attempts, and alone an attempt is written at
once, as before.

Two kinds of caller:

- ``record(attempt)``: the caller is waiting (an outage call whose caller hears nothing until
  it is on disk, an SMS webhook, a fax): written in the next commit, without delay;
- ``record(attempt, urgent=False)``: nobody is waiting (a normal-mode call, journaled after its
  decision went out): it may wait up to ``linger`` seconds for company, so that a busy hour's
  calls share their commits.

Either way the awaitable resolves only once the attempt is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from backline.core.records import Attempt, NewAttempt

log = logging.getLogger("backline.journal")

LINGER_SECONDS = 0.05
MAX_BATCH = 256


class BatchJournal(Protocol):
    def record_attempts(self, batch: Sequence[NewAttempt]) -> list[tuple[Attempt, bool]]: ...


class AttemptWriter:
    """Queues attempts and commits them in batches from one worker thread at a time."""

    def __init__(self, journal: BatchJournal, *, linger: float = LINGER_SECONDS,
                 max_batch: int = MAX_BATCH) -> None:
        self._journal = journal
        self._linger = linger
        self._max_batch = max_batch
        # (attempt, its waiter, whether the waiter is the caller's path)
        self._queue: list[tuple[NewAttempt, asyncio.Future[tuple[Attempt, bool]], bool]] = []
        self._closing = False
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0  # how many commits carried how many attempts: bench figures
        self.written = 0

    async def record(self, attempt: NewAttempt, *,
                     urgent: bool = True) -> tuple[Attempt, bool]:
        """``attempt`` as recorded, and whether it was new; returns once it is committed.

        Raises what the journal raised (JournalError) if its batch could not be committed.
        """
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        done: asyncio.Future[tuple[Attempt, bool]] = asyncio.get_running_loop().create_future()
        self._queue.append((attempt, done, urgent))
        self._wake.set()
        if urgent:
            self._urgent.set()
        return await done

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._urgent.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while self._queue or not self._closing:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._urgent.is_set() and len(self._queue) < self._max_batch:
                # Nobody is waiting on these: give others a moment to share the commit.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._linger)
            batch = self._queue[:self._max_batch]
            del self._queue[:self._max_batch]
            if not any(urgent for _, _, urgent in self._queue):
                self._urgent.clear()
            try:
                results = await asyncio.to_thread(self._journal.record_attempts,
                                                  [a for a, _, _ in batch])
            except Exception as exc:  # JournalError, or a bug: every waiter hears of it
                log.error("journal commit of %d attempt(s) failed: %s", len(batch), exc)
                for _, done, _ in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.commits += 1
            self.written += len(batch)
            for (_, done, _), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)
