"""Keeping the audit log useful and bounded, as a feature (see backline.features.seam).

The public listener's handlers ask the context's
:class:`~backline.features.refusal_gate.RefusalGate` when they refuse a request;
:class:`AuditUpkeep` writes its counts once a minute and, once a day, removes audit entries
and counts older than ``connections.storage.audit_years`` (six by default, HIPAA's
documentation period), at the controller's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from backline.core.refusals import RefusalTally
from backline.features.seam import Background, Context
from backline.journal import Journal, JournalError

log = logging.getLogger("backline.audit")

FLUSH_SECONDS = 60.0
PRUNE_EVERY = timedelta(days=1)

Clock = Callable[[], datetime]


def years_before(at: datetime, years: int) -> datetime:
    """``at`` moved back ``years`` calendar years (29 February becomes the 28th)."""
    try:
        return at.replace(year=at.year - years)
    except ValueError:
        return at.replace(year=at.year - years, day=28)


class AuditUpkeep:
    """Start with :meth:`start`; :meth:`close` writes what is still counted."""

    def __init__(self, journal: Journal, tally: RefusalTally, clock: Clock,
                 keep_years: int) -> None:
        self.journal = journal
        self.tally = tally
        self._clock = clock
        self.keep_years = keep_years
        self._pruned_at: datetime | None = None
        self.pruned = asyncio.Event()  # set once the first prune is done (at start)
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def round(self) -> None:
        """Writes the counts of minutes that are over and prunes if a day has passed since
        the last time (or it never ran).  Never raises: the next round tries again."""
        now = self._clock()
        counts = self.tally.take(before=now)
        try:
            await asyncio.to_thread(self.journal.record_refusals, counts)
        except JournalError as exc:
            log.error("refusal counts for %d source-minute(s) were not written: %s",
                      len(counts), exc)
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            try:
                removed = await asyncio.to_thread(
                    self.journal.prune_audit, years_before(now, self.keep_years))
            except JournalError as exc:
                log.error("the audit log could not be pruned: %s", exc)
                return
            self._pruned_at = now
            self.pruned.set()
            if removed:
                log.info("audit log: %d entries older than %d years removed", removed,
                         self.keep_years)

    async def _run(self) -> None:
        while not self._closing.is_set():
            await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), FLUSH_SECONDS)

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            await self._task
            self._task = None
        counts = self.tally.take()
        try:
            await asyncio.to_thread(self.journal.record_refusals, counts)
        except JournalError as exc:
            log.error("refusal counts were not written on the way out: %s", exc)


class AuditUpkeepFeature(Background[AuditUpkeep]):
    """The upkeep is ``service``."""


def build(context: Context) -> AuditUpkeepFeature:
    return AuditUpkeepFeature(AuditUpkeep(
        context.journal, context.refusals.tally, context.clock,
        context.directory.connections.storage.audit_years))
