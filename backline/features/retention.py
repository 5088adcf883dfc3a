"""Retention as a feature (see backline.features.seam): Backline's copies of faxes and voicemail
the inbox accepted more than ``connections.storage.delivered_days`` ago are removed, with the
PBX spool's copy of each message, off the call path.

Off unless that key is set: everything is kept, as before, and the start says so.  On, a round
runs once the PBX's record is imported after the start (the spool's place is known then) and
every ``ROUND_EVERY`` after, at the controller's clock.  What is due is the core's decision
(:func:`backline.core.retention.due`); a round removes the PBX's copy, then Backline's, then
marks the journal's record and audits it in one transaction.  A crash between leaves the
record unmarked: the next round (after a restart too) finds the files gone, removes nothing
more, and marks and audits it once.  A file that cannot be removed leaves its record
unmarked, and the next round tries again; so does a message whose spool folder app_voicemail
holds locked (backline.pbx.spool_lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta
from pathlib import Path

from backline.core.connections import FreeswitchPbx
from backline.core.records import AttemptKind, AuditEntry
from backline.core.retention import (
    ACTION,
    ACTOR,
    Baseline,
    Removal,
    Stores,
    accepted_before,
    clock_ahead,
    describe,
    due,
    removal_detail,
)
from backline.features.seam import Background, Context
from backline.features.status.health import Health, idle, off
from backline.journal import Journal, JournalError
from backline.pbx.fax_desk import DEFAULT_FAX_DIR
from backline.pbx.spool_lock import FolderHeld
from backline.pbx.voicemail_desk import voicemail_store

log = logging.getLogger("backline.retention")

ROUND_EVERY = 3600.0  # seconds: files go within an hour of falling due
PAGE = 200  # records read at a time
STEP_NOTED = timedelta(minutes=1)  # a step of the clock ahead this large is logged

Forget = Callable[[Collection[str]], Awaitable[dict[str, list[str]] | None]]


class Retention:
    """Start with :meth:`start` (after ``ready`` is set); :meth:`round` is one pass."""

    def __init__(self, journal: Journal, clock: Callable[[], datetime], days: int,
                 stores: Stores, forget: Forget, ready: asyncio.Event, *, node: str = "",
                 health: dict[str, Health] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self.days = days
        self.stores = stores
        self._clock = clock
        self._forget = forget
        self._ready = ready
        self._node = node
        self._health = health if health is not None else {}
        # The time that passed, as against the clock's date (tests move both by hand): a
        # step of the clock ahead is not counted (backline.core.retention.clock_ahead).
        self.monotonic = monotonic
        self._base: Baseline | None = None
        # By attempt: the files and spool files removed whose audit entry is not written yet
        # (the journal failed mid-round): named in the entry a later round writes.
        self._gone: dict[int, tuple[list[str], list[str]]] = {}
        self.rounds = 0  # rounds finished by the background task
        self.problem = ""  # what kept the last round from removing all that was due
        self.round_done = asyncio.Event()  # set after each of them (tests wait on it)
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def round(self) -> int:
        """Remove what is due now; return for how many attempts.  Raises JournalError."""
        now, passed = self._clock(), self.monotonic()
        if self._base is None:
            self._base = Baseline(now, passed)
        ahead = clock_ahead(self._base, now, passed)
        if ahead > STEP_NOTED:
            log.warning("retention: the clock is %s ahead of the time that passed since the "
                        "controller started; only the time that passed is counted", ahead)
        self._clock_seen(now, ahead)
        counted = now - ahead
        self.problem = ""
        removals: list[Removal] = []
        after = 0
        while True:
            page = await asyncio.to_thread(self.journal.kept_delivered, self._node,
                                           accepted_before(counted, self.days), after, PAGE)
            removals += due(page, counted, self.days, self.stores, node=self._node)
            if len(page) < PAGE:
                break
            after = page[-1].attempt.id
        spooled = await self._forget_spooled(removals)
        for r in removals:  # what went, kept until its audit entry is written
            if r.spooled and (names := spooled.get(r.spooled)):
                self._gone.setdefault(r.attempt_id, ([], []))[1].extend(names)
        done = 0
        for r in removals:
            if r.spooled and r.spooled not in spooled:
                continue  # its spool could not be read: kept whole until it can
            try:
                gone = await asyncio.to_thread(_remove, r.files)
            except OSError as exc:
                log.error("retention: the files of attempt %d could not be removed: %s",
                          r.attempt_id, exc.strerror or exc)
                self.problem = f"a file could not be removed: {exc.strerror or exc}"
                continue
            files, spool = self._gone.setdefault(r.attempt_id, ([], []))
            files.extend(gone)
            managed = r.spooled and spooled.get(r.spooled) is not None
            entry = AuditEntry(now, ACTOR, ACTION, removal_detail(
                r, self.days, files, spool if managed else None))
            done += await asyncio.to_thread(self.journal.mark_pruned, r.attempt_id, now,
                                            self.days, entry)
            del self._gone[r.attempt_id]
        if done:
            log.info("retention: the files of %d fax(es) and voicemail(s) the inbox accepted "
                     "more than %d days ago are removed", done, self.days)
        return done

    async def _forget_spooled(self, removals: list[Removal]) -> dict[str, list[str] | None]:
        """The PBX's copies of the due messages removed: what went, by msg_id (None: not
        Backline's to remove); a message missing here could not be removed."""
        wanted = [r.spooled for r in removals
                  if r.kind is AttemptKind.VOICEMAIL and r.spooled]
        # Asked with none wanted too: it first removes the folder locks a Backline process
        # left held as it died, whatever is due (backline.pbx.spool_lock.remove_dead_locks).
        try:
            forgotten = await self._forget(wanted)
        except FolderHeld as exc:
            # Not ours to wait for: what went is marked; the rest is kept whole (its record
            # unmarked, Backline's copy too) and tried again at the next pass.
            log.warning("retention: %s", exc)
            self.problem = str(exc)
            return {m: exc.removed[m] for m in wanted if m in exc.removed}
        except OSError as exc:
            log.error("retention: the PBX's voicemail spool could not be pruned (%s): those "
                      "messages are all kept until it can", exc.strerror or exc)
            self.problem = f"the PBX's voicemail spool: {exc.strerror or exc}"
            return {}
        if forgotten is None:
            return dict.fromkeys(wanted)
        return {m: forgotten.get(m, []) for m in wanted}

    async def _run(self) -> None:
        ready = asyncio.ensure_future(self._ready.wait())
        closing = asyncio.ensure_future(self._closing.wait())
        await asyncio.wait({ready, closing}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        closing.cancel()
        while not self._closing.is_set():
            now = self._clock()
            try:
                done = await self.round()
            except JournalError as exc:
                log.error("retention: the journal could not be read or marked: %s", exc)
                self._say(self._health.get("retention"), now, str(exc))
            else:
                self._say(self._health.get("retention"), now, self.problem, done)
            self.rounds += 1
            self.round_done.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), ROUND_EVERY)

    def _clock_seen(self, at: datetime, ahead: timedelta) -> None:
        """The status page's clock line: failing while the clock is stepped ahead of the time
        that passed, then ok with the step kept as its last error, until the next start (a
        step the log alone said was seen by nobody watching the page)."""
        current = self._health.get("clock")
        if current is None:
            return
        self._health["clock"] = current.failed(
            at, f"{_span(ahead)} ahead of the time that passed since the controller started",
            "stepped ahead: retention counts only the time that passed") \
            if ahead > STEP_NOTED else current.succeeded(
                at, "in step with the time that passed since the controller started")

    def _say(self, current: Health | None, at: datetime, error: str, done: int = 0) -> None:
        if current is None:
            return
        self._health["retention"] = current.failed(at, error, "files are not being pruned") \
            if error else current.succeeded(
                at, f"faxes and voicemail removed {self.days} days after the inbox accepted "
                f"them ({done} in the last round)")


def _span(delta: timedelta) -> str:
    """``7 d 0 h 1 min``, ``2 h 5 min``: a step of the clock, to the minute."""
    days, rest = divmod(int(delta.total_seconds()) // 60, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return (f"{days} d " if days else "") + (f"{hours} h " if days or hours else "") + \
        f"{minutes} min"


def _remove(files: tuple[str, ...]) -> list[str]:
    """Remove each of ``files`` that is there; the names removed."""
    gone = []
    for name in files:
        path = Path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # removed before a crash, or never there (a converted fax's TIFF)
        gone.append(name)
    return gone


class RetentionFeature(Background[Retention]):
    """The retention is ``service``."""


def build(context: Context) -> RetentionFeature | None:
    """Retention, or None when ``connections.storage.delivered_days`` is not set (said at
    start and on the status page: everything is kept)."""
    d = context.directory
    days = d.connections.storage.delivered_days
    pbx = d.connections.pbx
    log.info("%s", describe(days, inbox=d.connections.inbox is not None,
                            spool=not isinstance(pbx, FreeswitchPbx)))
    if days is None:
        context.health["retention"] = off("every fax and voicemail is kept "
                                          "(connections.storage.delivered_days is not set)")
        context.health["clock"] = off("checked by retention's rounds only "
                                      "(connections.storage.delivered_days is not set)")
        return None
    fax_dir = Path(pbx.fax_dir) if pbx is not None else DEFAULT_FAX_DIR
    stores = Stores(str(fax_dir), str(voicemail_store(fax_dir)))
    context.health["retention"] = idle(f"removes faxes and voicemail {days} days after the "
                                       "inbox accepted them; no round yet")
    context.health["clock"] = idle("checked against the time that passed at each retention "
                                   "round; no round yet")
    return RetentionFeature(Retention(
        context.journal, context.clock, days, stores, context.forget_voicemail,
        context.record_imported, node=context.node, health=context.health))
