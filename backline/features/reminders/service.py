"""Sending the outage reminders: a background task beside the alerts.

Wiring only; when a reminder is due and what it says is
:mod:`backline.features.reminders.policy`.  The task wakes when the next reminder falls due,
when the mode changes (the controller hands us its change event) or when a failed send is due
again, and at least every ``MAX_NAP`` seconds (a clock that jumped, another controller's
switch).  Each round:

1. the newest slot due for the outage now engaged (none: nothing to do);
2. the recipients the audit log says already have it (one query, skipped once all have it);
3. to each other recipient, the reminder: by email to every ``backup.alerts.emails`` address,
   and with ``email+sms`` by SMS to every number; each success is written to the audit log
   (``outage.reminder.sent``) at once, each failure is tried again after a backoff
   (:mod:`backline.features.sending.retry`: 5 s doubling to 5 min) for as long as the slot is
   the newest.

A restart loses nothing and repeats nothing that was recorded: the audit log is the record.
The one window is a crash between the server taking a message and the audit write; the resend
then carries the same Message-ID, built from the outage, slot and recipient.

Several controllers on one journal: before sending, a controller claims (outage, slot,
recipient), a lease row in ``inbox_lease`` held by this process for ``CLAIM_SECONDS``, and
reads the audit log again under the claim; whoever does not get the claim leaves that
recipient to its holder and looks again next round.  The claim goes once the send is audited
(or failed); a claim whose sender died is taken over when its lease has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from backline.core.e164 import redact
from backline.core.model import Directory
from backline.core.outage import ModeState
from backline.features.alerts.service import outage_senders
from backline.features.inbox.service import process_holder
from backline.features.reminders import policy as reminder
from backline.features.reminders.policy import Slot
from backline.features.sending import retry
from backline.features.sending.leased import (
    Clock,
    LeasedDelivery,
    Mailer,
    NotSent,
    SmsSender,
)
from backline.journal import AuditEntry, Journal, JournalError

log = logging.getLogger("backline.notifier.reminders")

MAX_NAP = 60.0  # seconds the task sleeps at most
CLAIM_SECONDS = 300.0  # a claim on one reminder outlasts one send; a dead sender's then lapses


@dataclass(frozen=True, slots=True)
class ReminderSettings:
    practice: str
    tz: str
    interval: timedelta
    emails: tuple[str, ...]
    sms: tuple[str, ...]
    mail_from: str
    sms_from: str = ""

    def recipients(self) -> list[str]:
        """As the audit log names them: ``email:ADDRESS``, ``sms:+E164``."""
        return [f"email:{e}" for e in self.emails] + [f"sms:{n}" for n in self.sms]


@dataclass
class _Backoff:
    slot: Slot
    tries: int
    next_try_at: datetime


class OutageReminders(LeasedDelivery):
    """Start with :meth:`start`, stop with :meth:`close`.  ``mode`` returns the controller's
    mode state and ``changed`` its current change event (a new one after each change)."""

    def __init__(self, journal: Journal, settings: ReminderSettings, mailer: Mailer,
                 sms: SmsSender | None, clock: Clock, mode: Callable[[], ModeState],
                 changed: Callable[[], asyncio.Event]) -> None:
        super().__init__("backline-reminders", "reminders", log, journal, clock, mailer=mailer,
                         sms=sms, texts_to=settings.sms)
        self.settings = settings
        self._mode = mode
        self._changed = changed
        self._backoff: dict[str, _Backoff] = {}
        self._complete: Slot | None = None  # every recipient has it: no need to ask the journal
        self.holder = process_holder()  # claims (outage, slot, recipient) as this process

    # -- the task --------------------------------------------------------------------------

    def also_wake(self) -> asyncio.Event:
        return self._changed()  # a mode change: a reminder may be due, or none any more

    async def round(self) -> float:
        await self.remind_due()
        now = self._clock()
        times = [b.next_try_at for b in self._backoff.values()]
        due = reminder.next_due_at(self._mode(), now, self.settings.interval)
        if due is not None:
            times.append(due)
        return self.nap_until(min(times, default=None), now, MAX_NAP)

    async def remind_due(self) -> int:
        """Send the newest reminder due now to each recipient that does not have it yet;
        return how many went."""
        now = self._clock()
        slot = reminder.due_slot(self._mode(), now, self.settings.interval)
        if slot is None or slot == self._complete:
            self._backoff.clear()
            return 0
        entries = await asyncio.to_thread(self.journal.audit_entries, reminder.SENT_ACTION,
                                          reminder.outage_key(slot.since))
        have = reminder.sent_to([e.detail for e in entries], slot)
        owed = [r for r in self.settings.recipients() if r not in have]
        # A backoff from an older slot is moot: the newer reminder replaces it.
        self._backoff = {r: b for r, b in self._backoff.items() if b.slot == slot}
        sent = 0
        down: dict[str, str] = {}  # channel -> why, once it could not be reached this round
        try:
            for recipient in owed:
                if self.stopping:
                    break
                waiting = self._backoff.get(recipient)
                if waiting is not None and waiting.next_try_at > now:
                    continue
                channel, _, to = recipient.partition(":")
                if channel in down:  # put back, as the rest of a batch (see NotSent)
                    await self._failed(slot, recipient, down[channel])
                    continue
                claim = "reminder " + reminder.audit_detail(slot, recipient)
                if not await asyncio.to_thread(
                        self.journal.claim_lease, claim, self.holder, self._clock(),
                        self._clock() + timedelta(seconds=CLAIM_SECONDS)):
                    continue  # another controller is sending it; the audit log will say
                try:
                    if await self._already_sent(slot, recipient):
                        self._backoff.pop(recipient, None)
                        sent += 1  # by another controller, since this round read the log
                        continue
                    try:
                        await self._send(slot, channel, recipient, to, now)
                    except NotSent as exc:
                        if exc.unreachable:
                            down[channel] = exc.reason
                        await self._failed(slot, recipient, exc.reason)
                        continue
                    await asyncio.to_thread(self.journal.audit, reminder_entry(
                        self._clock(), slot, recipient))
                finally:
                    with contextlib.suppress(JournalError):
                        await asyncio.to_thread(self.journal.release_lease, claim, self.holder)
                self._backoff.pop(recipient, None)
                sent += 1
        finally:
            await self.batch_done()
        if sent == len(owed):
            self._complete = slot
        return sent

    async def _already_sent(self, slot: Slot, recipient: str) -> bool:
        """Whether the audit log has ``recipient``'s reminder for ``slot`` (read under the
        claim: another controller may have sent it since this round read the log)."""
        detail = reminder.audit_detail(slot, recipient)
        entries = await asyncio.to_thread(self.journal.audit_entries, reminder.SENT_ACTION,
                                          detail)
        return any(e.detail == detail for e in entries)

    async def _failed(self, slot: Slot, recipient: str, reason: str) -> None:
        before = self._backoff.get(recipient)
        tries = (before.tries if before is not None else 0) + 1
        self._backoff[recipient] = _Backoff(slot, tries, retry.next_try(self._clock(), tries))
        channel = recipient.partition(":")[0]
        log.warning("reminders: reminder %d by %s not sent (try %d: %s); next try in %.0f s",
                    slot.number, channel, tries, reason, retry.retry_delay(tries))

    async def _send(self, slot: Slot, channel: str, recipient: str, to: str,
                    now: datetime) -> None:
        s = self.settings
        if channel == "email":
            await self.email(reminder.reminder_email(
                practice=s.practice, sender=s.mail_from, to=to,
                message_id=reminder.message_id(s.practice, s.mail_from, slot, recipient),
                slot=slot, sent_at=now, tz=s.tz, interval=s.interval))
            log.info("reminders: reminder %d of the outage emailed to %s", slot.number, to)
            return
        if await self.text(s.sms_from, to, reminder.reminder_sms(s.practice, slot, now, s.tz),
                           f"reminders: reminder {slot.number}"):
            log.info("reminders: reminder %d of the outage texted to %s", slot.number,
                     redact(to))


def reminder_entry(at: datetime, slot: Slot, recipient: str) -> AuditEntry:
    return AuditEntry(at, reminder.ACTOR, reminder.SENT_ACTION,
                      reminder.audit_detail(slot, recipient))


def reminders_for(directory: Directory, journal: Journal, clock: Clock,
                  mode: Callable[[], ModeState], changed: Callable[[], asyncio.Event]
                  ) -> OutageReminders | None:
    """The practice's outage reminders, or None (with the reason logged) if they cannot go:
    they need email recipients and ``connections.smtp``; SMS ones also the gateway."""
    senders = outage_senders(directory, "outage reminder")
    smtp = directory.connections.smtp
    if senders is None or smtp is None:
        return None
    alerts = directory.backup.alerts
    gateway = directory.connections.sms_gateway
    settings = ReminderSettings(
        practice=directory.practice.name, tz=directory.practice.timezone,
        interval=timedelta(hours=directory.backup.reminder_hours), emails=alerts.emails,
        sms=senders.sms_numbers, mail_from=smtp.sender,
        sms_from=gateway.sender if gateway is not None else "")
    return OutageReminders(journal, settings, senders.mailer, senders.sms, clock, mode, changed)
