"""The half of a PBX driver that is the same on every PBX: an inbound call decided and
journaled, a desk phone's feature code, the end of a fax, and the registrations waited on.

Both drivers extend :class:`CallPath` and only spell things for their PBX: how the decision
reaches the channel, how the feature code's answer is played, where the fax results are read.
So the policy (when a call is journaled, what ``*28`` means) cannot drift between them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict, TypeVar

from backline.core import e164
from backline.core.conversations import ConversationBook
from backline.core.decisions import InboundCall, InboundDecision, OutboundDecision, RefuseOutbound
from backline.core.dialling import dialled
from backline.core.fax_intake import BadFaxReport, FaxEnd
from backline.core.hours import HoursOverride, HoursState
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.records import NewAttempt
from backline.core.registrations import Registrations
from backline.core.routing import decide_outbound
from backline.core.voicemail import CallEnd, HungUp, VoicemailMessage, missed_at_hangup
from backline.pbx import names
from backline.pbx.inbound import decide_inbound, journaled_first
from backline.pbx.ports import FaxDesk, VoicemailDesk

T = TypeVar("T")

_SWITCHES = {names.ENGAGE: Mode.OUTAGE, names.END: Mode.NORMAL}
_HOURS = {names.HOURS_CLOSED: HoursState.CLOSED, names.HOURS_OPEN: HoursState.OPEN}


class CallPathOptions(TypedDict, total=False):
    """The controller's optional hooks, as each driver's constructor takes them on to
    :class:`CallPath` (``**options``)."""

    record_later: Callable[[NewAttempt], Awaitable[object]] | None
    hours_feature: Callable[[str, HoursState, str], Awaitable[bool]] | None
    hours_override: Callable[[], HoursOverride | None]
    faxes: FaxDesk | None
    voicemail: VoicemailDesk | None
    clock: Callable[[], datetime]


class CallPath:
    """What a driver needs of the controller, and the shared steps that use it.

    ``record`` journals an attempt before the PBX hears the decision; ``record_later`` (default
    ``record``) one nobody waits on.  ``feature`` and ``hours_feature`` are the controller's
    checks of a desk phone's ``*28``/``*29`` and ``*26``/``*27`` with its PIN.  ``clock`` is
    the controller's: a call is decided (the number's hours) and journaled at it.
    """

    def __init__(self, book: OwnershipBook, conversations: ConversationBook,
                 mode: Callable[[], Mode], record: Callable[[NewAttempt], Awaitable[object]], *,
                 log: logging.Logger, ring_seconds: int,
                 record_later: Callable[[NewAttempt], Awaitable[object]] | None = None,
                 feature: Callable[[str, Mode, str], Awaitable[bool]] | None = None,
                 hours_feature: Callable[[str, HoursState, str], Awaitable[bool]] | None = None,
                 hours_override: Callable[[], HoursOverride | None] = lambda: None,
                 faxes: FaxDesk | None = None, voicemail: VoicemailDesk | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.book = book
        self.conversations = conversations
        self.mode = mode
        self.record = record
        self.record_later = record_later or record
        self.feature_switch = feature
        self.hours_feature = hours_feature
        self.hours_override = hours_override
        self.faxes = faxes
        self.voicemail = voicemail
        self.clock = clock
        self.log = log
        self.ring_seconds = ring_seconds
        self.registrations = Registrations(book, book.directory.max_per_login)
        self._changed = asyncio.Event()
        self._after: set[asyncio.Task[None]] = set()

    # -- inbound calls ---------------------------------------------------------------------

    async def take_inbound(self, call: InboundCall, uniqueid: str,
                           send: Callable[[InboundDecision], Awaitable[T]]) -> T:
        """Decide ``call``, have the PBX hear the decision through ``send``, and journal it
        when ``journaled_first`` says: before ``send``, or right after it in the background.

        A fax to be received is journaled when it ends (``take_fax_end``), once, with its
        pages and PDF: the PBX's CDR covers a controller that dies meanwhile.  If the first
        journal write or ``send`` raises, the exception goes to the driver, whose PBX then
        answers by its dialplan's fallback.
        """
        mode = self.mode()
        decided = await decide_inbound(self.book, self.registrations, call, mode,
                                       self.ring_seconds, self.faxes, uniqueid, self.clock(),
                                       self.log, self.hours_override())
        attempt = decided.attempt
        first = journaled_first(mode, decided.decision)
        if attempt is not None and first:
            await self.record(attempt)
        sent = await send(decided.decision)
        if attempt is not None and not first:
            self.after_decision(self.record_later(attempt))
        return sent

    def after_decision(self, work: Awaitable[object], failed: str =
                       "journaling a call after its decision failed (the CDR import brings "
                       "it in)") -> None:
        """Run ``work`` once the PBX has its decision; kept so that ``stop_after`` waits
        for it.  ``failed`` is logged if it raises."""
        async def run() -> None:
            try:
                await work
            except Exception:
                self.log.exception(failed)

        task = asyncio.create_task(run())
        self._after.add(task)
        task.add_done_callback(self._after.discard)

    async def stop_after(self) -> None:
        """Wait for the work started by ``after_decision`` (a driver's stop)."""
        if self._after:
            await asyncio.gather(*self._after, return_exceptions=True)

    # -- desk phones: calls out, feature codes; faxes ------------------------------------

    def take_outbound(self, desk_phone: str, digits: str) -> OutboundDecision:
        """A desk phone's call: ``desk_phone`` as the PBX authenticated it, ``digits`` as
        dialled (untrusted; the core reads them as a number or an extension)."""
        call = dialled(desk_phone, digits)
        decision = decide_outbound(self.book, self.conversations, call, self.mode(),
                                   self.book.directory.emergency_numbers,
                                   registrations=self.registrations,
                                   ring_seconds=self.ring_seconds)
        self.log.info("outbound call from desk phone %s to %s: %s%s", desk_phone[:40],
                      e164.redact(call.to), type(decision).__name__,
                      f" ({decision.why.value})" if isinstance(decision, RefuseOutbound)
                      else "")
        return decision


    async def desk_phone_feature(self, desk_phone: str, action: str, pin: str) -> bool:
        """``*28``/``*29`` + PIN from a desk phone: engage or end the outage; ``*26``/``*27``:
        force the hours closed or open until the next scheduled change.  True if the
        controller took it (an admin's phone, the right PIN); it records the try either way.
        """
        to, hours = _SWITCHES.get(action), _HOURS.get(action)
        if to is not None and self.feature_switch is not None:
            return await self.feature_switch(desk_phone, to, pin)
        if hours is not None and self.hours_feature is not None:
            return await self.hours_feature(desk_phone, hours, pin)
        return False

    async def take_fax_end(self, read_end: Callable[[], Awaitable[FaxEnd]]) -> None:
        """The end of a fax call to the fax desk; ``read_end`` reads how it ended from the
        PBX's report, raising BadFaxReport for one we will not take."""
        if self.faxes is None:
            self.log.warning("a fax ended but fax intake is not wired; the CDR import takes it")
            return
        try:
            end = await read_end()
        except BadFaxReport as exc:
            self.log.error("fax report refused: %s", exc)
            return
        await self.faxes.fax_ended(end)

    async def take_call_end(self, end: CallEnd | None) -> None:
        """An unanswered call ended (``end``: None if the PBX's report was not one of ours):
        its message taken in, or a missed call journaled."""
        if end is None:
            self.log.error("a call-end report that is not one of ours: render the dialplan "
                           "again (`backline render`)")
            return
        if self.voicemail is None:
            self.log.warning("a call ended unanswered but voicemail intake is not wired; the "
                             "spool is read at the next login")
            return
        await self.voicemail.call_ended(end)

    def take_hangup(self, call: InboundCall, uniqueid: str, decision: InboundDecision,
                    hung_up: HungUp | None) -> None:
        """How an inbound call ended, as the PBX reported it once the caller's channel was
        gone (``hung_up``; None: not reported, or not so that it can be trusted).  A call
        sent to ring or to voicemail that nobody took and that left no message is journaled
        as missed (``missed:UNIQUEID``, once: the Asterisk live path's record), in the
        background; ``stop_after`` waits for it.  In doubt, nothing."""
        if hung_up is None:
            self.log.warning("the end of a call was not reported: not filed as missed")
            return
        missed = missed_at_hangup(decision, call, uniqueid, hung_up, self.clock())
        if missed is None:
            return

        async def journal(missed: NewAttempt) -> None:
            if await self.record_later(missed):
                self.log.info("missed call from %s to %s: no answer and no message",
                              e164.redact(call.caller), missed.recipient)

        self.after_decision(journal(missed), "journaling a missed call failed")

    def take_message_left(self, report: Callable[[], tuple[VoicemailMessage, Path] | None]
                          ) -> None:
        """The PBX reports a message left (FreeSWITCH's event): ``report()`` reads the
        message and where its recording is (None: none of ours; ValueError: not in the PBX's
        shape, and nothing is read).  To the voicemail intake in the background (kept,
        journaled once by its key); ``stop_after`` waits for it."""
        try:
            left = report()
        except ValueError as exc:
            self.log.error("a voicemail report was ignored: %s", exc)
            return
        if left is None:
            return
        if self.voicemail is None:
            self.log.warning("a voicemail was left but voicemail intake is not wired")
            return
        self.after_decision(self.voicemail.message_left(*left),
                            "a voicemail left could not be taken in")

    # -- registrations ---------------------------------------------------------------------

    def registrations_unread(self, why: object) -> None:
        """The PBX's list of registrations could not be read: the ring set stays as it was
        until the next change or login reads the list again."""
        self.log.warning("could not list the registrations (the desk phones that rang still "
                         "ring): %s", why)

    def registrations_changed(self) -> None:
        """Wake whoever waits on registrations; the next wait gets a fresh event."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_registered(self, users: set[str], within: float) -> None:
        """For tests and ops: wait until every given login has a live registration."""
        try:
            await self.wait_registrations(
                lambda r: all(r.live(u) for u in users), within)
        except TimeoutError:
            live = {u for u in users if self.registrations.live(u)}
            raise TimeoutError(f"not registered: {sorted(users - live)}") from None

    async def wait_registrations(self, done: Callable[[Registrations], bool],
                                 within: float) -> None:
        """For tests and ops: wait until ``done`` holds of the registrations, asked again at
        each change; TimeoutError after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            changed = self._changed
            if done(self.registrations):
                return
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                if done(self.registrations):
                    return
                raise
