"""Keeping the mode agreed between the journal (CLI, status page, other controllers) and the
PBX (console, dialplan, lamps), one round a second; and the hours override beside it.

The decision of each round is pure (:func:`backline.core.mode_sync.reconcile`); this module
reads and writes both sides, reports what this controller runs by (``backline outage
engage`` waits on that), tells the controller of every change (``on_change``) and gives the
features their turn each round (``each_round``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, assert_never

from backline.core.hours import HoursOverride
from backline.core.mode_sync import Agree, InSync, PushToPbx, RecordConsoleSwitch, reconcile
from backline.core.outage import AlreadyInMode, Mode, ModeChange, ModeState, Via, switch, switch_key
from backline.features.status.health import Health, Verdict
from backline.features.status.metrics import Metrics
from backline.journal import ControllerReport, Journal, JournalError, StaleMode
from backline.pbx.ports import PbxError

log = logging.getLogger("backline.controller")

MODE_POLL_SECONDS = 1.0
# A running controller rewrites its row in the journal when what it reports changes, and at
# least this often; the CLI counts a controller unseen for three times as long as gone.
REPORT_EVERY = timedelta(seconds=10)
FORGET_AFTER = timedelta(days=1)  # rows of controllers that never said goodbye (SIGKILL)


class ModeMirror(Protocol):
    """The PBX's copy of the mode (see backline.core.mode_sync)."""

    @property
    def up(self) -> bool: ...

    async def read_mode(self) -> tuple[str | None, str | None, str | None, str | None]: ...

    async def write_mode(self, mode: Mode, *, ack_only: bool = False) -> None: ...

    async def forget_console_note(self) -> None:
        """Remove the console's ``by`` and ``reason`` keys once its switch is recorded."""


class ModeKeeper:
    """The mode this controller runs by (``state``), kept in agreement with the journal and,
    once :meth:`attach` gave it one, the PBX's mirror.  ``holder``, ``node`` and
    ``inbox_blocked`` are what it reports to the journal; ``health["pbx_link"]`` follows the
    PBX link each round."""

    def __init__(self, journal: Journal, clock: Callable[[], datetime], metrics: Metrics,
                 health: dict[str, Health], *, holder: str, node: str, pbx_label: str,
                 inbox_blocked: str, on_change: Callable[[ModeState], None],
                 each_round: Callable[[], Awaitable[None]]) -> None:
        self.journal = journal
        self._clock = clock
        self.metrics = metrics
        self.health = health
        self.holder, self.node, self.pbx_label = holder, node, pbx_label
        self.inbox_blocked = inbox_blocked
        self._on_change = on_change
        self._each_round = each_round
        self.state: ModeState = journal.mode_state()
        # The admins' latest override of the hours (*26/*27); backline.core.hours says whether it
        # still holds at a call's moment.
        self.hours_override: HoursOverride | None = journal.hours_override()
        self.mirror: ModeMirror | None = None
        self.changed = asyncio.Event()  # set at the next change, then replaced
        self.failed_rounds = 0
        self.rounds = 0  # ended, failed or not: tests count rounds instead of reading a clock
        self._round_ended = asyncio.Event()
        self._pbx_switch = ""  # the switch the PBX was last seen holding (outage.switch_key)
        self._pbx_at: datetime | None = None
        self._last_report: tuple[str, str, str] | None = None
        self._last_report_at: datetime | None = None
        metrics.set_engaged(self.state.mode is Mode.OUTAGE)

    def attach(self, mirror: ModeMirror) -> None:
        """The PBX side of the mode (the Asterisk driver), kept in agreement every tick."""
        self.mirror = mirror

    async def switch(self, to: Mode, *, by: str, via: Via, reason: str) -> ModeChange:
        """Switch the mode from inside the controller (desk phone, console); record it."""
        state = await asyncio.to_thread(self.journal.mode_state)
        change = switch(state, to, at=datetime.now(UTC), by=by, via=via, reason=reason)
        await asyncio.to_thread(self.journal.record_mode_change, change, state)
        self._adopt(ModeState(change.mode, change))
        await self.sync_once()
        return change

    async def wait_mode(self, mode: Mode, within: float) -> None:
        """Until the controller is in ``mode`` (raise TimeoutError after ``within`` s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.state.mode is not mode:
            changed = self.changed
            await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))

    def _adopt(self, state: ModeState) -> None:
        if state != self.state:
            self.state = state
            self.changed.set()
            self.changed = asyncio.Event()
            self.metrics.set_engaged(state.mode is Mode.OUTAGE)
            self._on_change(state)
            if state.since is not None:
                self.metrics.mode_changed(state.mode, state.since.via)
            since = state.since
            log.warning("mode is now %s (by %s via %s%s)", state.mode.value,
                        since.by if since else "-", since.via.value if since else "-",
                        f": {since.reason}" if since and since.reason else "")

    async def sync_once(self) -> None:
        """One round: read the journal's mode, bring the PBX and the journal into agreement,
        and report what this controller runs by.  Never raises: a round that fails (the
        journal locked or full, the PBX not answering, anything) is logged and counted in
        /metrics (``backline_mode_rounds_failed``), and the next round tries again."""
        self._observe_link()
        try:
            await self._agree()
            await self._report()
            # An override set through another controller on the same journal holds here too.
            self.hours_override = await asyncio.to_thread(self.journal.hours_override)
            await self._each_round()  # the features' (conversation members, say)
        except JournalError as exc:
            self._round_failed("journal", f"the journal failed: {exc}")
        except PbxError as exc:  # the link down, or a command refused: the next round retries
            self._round_failed("pbx", f"could not bring the PBX's mode up to date: {exc}")
        except Exception as exc:
            log.exception("mode round failed")
            self._round_failed("other", f"{type(exc).__name__}: {exc}")
        finally:
            self.rounds += 1
            self._round_ended.set()
            self._round_ended = asyncio.Event()

    def _round_failed(self, part: str, why: str) -> None:
        self.failed_rounds += 1
        self.metrics.mode_round_failed(part)
        log.warning("mode round failed (%s); trying again in %.0f s", why, MODE_POLL_SECONDS)

    async def wait_rounds(self, until: Callable[[], bool], within: float) -> None:
        """Until ``until()`` holds at the end of a mode round (TimeoutError after ``within``
        s).  For tests: they wait on the controller's rounds rather than on the clock."""
        async with asyncio.timeout(within):
            while not until():
                await self._round_ended.wait()

    def _observe_link(self) -> None:
        """The PBX link's state, each round: the gauge and the status page follow it."""
        if self.mirror is None:
            return
        up, now = self.mirror.up, self._clock()
        self.metrics.link(self.pbx_label, up)
        current = self.health["pbx_link"]
        if up:
            self.health["pbx_link"] = current.succeeded(now, "the PBX link is up")
        else:
            self._pbx_switch, self._pbx_at = "", None  # unknown until it is back
            if current.verdict is not Verdict.FAILING:
                self.health["pbx_link"] = current.failed(now, "the link to the PBX is down",
                                                         "the PBX link is down")

    async def _agree(self) -> None:
        self._adopt(await asyncio.to_thread(self.journal.mode_state))
        if self.mirror is None:
            self._pbx_switch, self._pbx_at = switch_key(self.state.since), self._clock()
            return
        if not self.mirror.up:
            return
        pbx_mode, ack, by, reason = await self.mirror.read_mode()
        action = reconcile(pbx_mode, ack, self.state)
        match action:
            case InSync():
                pass
            case PushToPbx():
                await self.mirror.write_mode(action.mode)
                log.info("the PBX now shows mode %s", action.mode.value)
            case Agree():
                await self.mirror.write_mode(action.mode, ack_only=True)
                if by is not None or reason is not None:
                    await self.mirror.forget_console_note()  # that switch's, not the next's
            case RecordConsoleSwitch():
                await self._record_console(action.mode, by, reason)
            case _:
                assert_never(action)
        key = switch_key(self.state.since)
        if self._pbx_switch != key:
            self._pbx_switch, self._pbx_at = key, self._clock()

    async def _record_console(self, mode: Mode, by: str | None, reason: str | None) -> None:
        """Journal a switch made on the PBX console, then agree with the PBX.  A journal
        failure raises: the PBX keeps ``mode != ack``, so the next round records it."""
        assert self.mirror is not None
        state = self.state
        try:
            change = switch(state, mode, at=datetime.now(UTC), by=f"console:{by}" if by
                            else "console", via=Via.CONSOLE,
                            reason=reason or "switched on the Asterisk console")
            await asyncio.to_thread(self.journal.record_mode_change, change, state)
            self._adopt(ModeState(change.mode, change))
        except StaleMode:
            return  # the journal moved meanwhile; the next tick reconciles against it
        except AlreadyInMode:
            pass
        await self.mirror.write_mode(mode, ack_only=True)
        if by is not None or reason is not None:
            # Used: a later plain `database put backline mode ...` must not inherit them.
            await self.mirror.forget_console_note()

    async def _report(self) -> None:
        """Tell the journal what this controller runs by and what its PBX holds, when that
        changed or every REPORT_EVERY: `backline outage engage/end` waits on it."""
        now = self._clock()
        what = (switch_key(self.state.since), self._pbx_switch, self.inbox_blocked)
        if what == self._last_report and self._last_report_at is not None \
                and now - self._last_report_at < REPORT_EVERY:
            return
        report = ControllerReport(self.holder, self.node, now, what[0], what[1], self._pbx_at,
                                  what[2])
        await asyncio.to_thread(self.journal.report_controller, report,
                                forget_before=now - FORGET_AFTER)
        self._last_report, self._last_report_at = what, now

    async def keep_mode(self, stop: asyncio.Event) -> None:
        """Every second: switches made elsewhere (CLI, console) are picked up and mirrored.
        A failed round never ends the loop (see ``sync_once``)."""
        while not stop.is_set():
            await self.sync_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MODE_POLL_SECONDS)


def mode_at(history: list[ModeChange], at: datetime) -> Mode:
    """The mode in force at ``at``, from switches listed newest first.

    CDR times have whole seconds: a switch within the same second counts as before it.
    """
    for change in history:
        if change.at.replace(microsecond=0) <= at:
            return change.mode
    return Mode.NORMAL
