"""Sending the outage's start and end notices: a background task beside the reminders.

Wiring only; which notices are owed and what they say is
:mod:`backline.features.notices.policy`.  The task wakes when the mode changes (the
controller hands us its change event) or when a failed send is due again, and at least every
``MAX_NAP`` seconds (another controller's switch).  Each round:

1. the mode's recent switches from the journal, and the notices they owe now;
2. per notice, the recipients the audit log says already have it;
3. to each other recipient, the notice: by email to every ``backup.alerts.emails`` address,
   and with ``email+sms`` by SMS to every number; each success is written to the audit log
   (``outage.notice.sent``) at once, each failure is tried again after a backoff
   (:mod:`backline.features.sending.retry`: 5 s doubling to 5 min) for as long as the
   notice is owed.

The rules are the reminders' (:mod:`backline.features.reminders.service`): the audit log is
the record, so a restart repeats nothing recorded, and a resend after a crash between the
server's acceptance and the audit write carries the same Message-ID.  Before sending, a
controller claims (outage, notice, recipient) as a lease in ``inbox_lease`` and reads the
audit log again under it, so controllers sharing a journal send each notice once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from backline.core.connections import StatusListener
from backline.core.e164 import redact
from backline.core.model import Directory
from backline.features.alerts.service import outage_senders
from backline.features.inbox.service import process_holder, why_blocked
from backline.features.notices import policy as notices
from backline.features.notices.policy import Held, Kind, Notice
from backline.features.reminders.policy import outage_key
from backline.features.sending import retry
from backline.features.sending.leased import (
    Clock,
    LeasedDelivery,
    Mailer,
    NotSent,
    SmsSender,
)
from backline.journal import AuditEntry, Journal, JournalError

log = logging.getLogger("backline.notifier.notices")

MAX_NAP = 60.0  # seconds the task sleeps at most
CLAIM_SECONDS = 300.0  # a claim on one notice outlasts one send; a dead sender's then lapses
HISTORY = 20  # switches read each round: more than any week's outages


@dataclass(frozen=True, slots=True)
class NoticeSettings:
    practice: str
    tz: str
    emails: tuple[str, ...]
    sms: tuple[str, ...]
    mail_from: str
    sms_from: str = ""
    announcement: str = ""  # its text ("" for a recording)
    status_url: str = ""  # where ops read the status page ("" when there is none)
    inbox_blocked: str = ""  # why held items cannot reach the inbox ("" when they can)

    def recipients(self) -> list[str]:
        """As the audit log names them: ``email:ADDRESS``, ``sms:+E164``."""
        return [f"email:{e}" for e in self.emails] + [f"sms:{n}" for n in self.sms]


@dataclass
class _Backoff:
    tries: int
    next_try_at: datetime


class OutageNotices(LeasedDelivery):
    """Start with :meth:`start`, stop with :meth:`close`.  ``changed`` returns the
    controller's current mode-change event (a new one after each change).

    End notices wait for ``record_imported`` (None: nothing to wait for): the calls the PBX
    answered alone while no controller ran are journaled only by the import that follows a
    controller's start, and a notice sent before it would count too few held attempts."""

    def __init__(self, journal: Journal, settings: NoticeSettings, mailer: Mailer,
                 sms: SmsSender | None, clock: Clock,
                 changed: Callable[[], asyncio.Event],
                 record_imported: asyncio.Event | None = None) -> None:
        super().__init__("backline-notices", "notices", log, journal, clock, mailer=mailer,
                         sms=sms, texts_to=settings.sms)
        self.settings = settings
        self._changed = changed
        self._imported = record_imported
        self._import_waiter: asyncio.Task[None] | None = None
        self._said_waiting = False
        self._backoff: dict[str, _Backoff] = {}  # by claim name
        self._complete: set[Notice] = set()  # every recipient has it: no need to ask again
        self.holder = process_holder()  # claims (outage, notice, recipient) as this process

    # -- the task --------------------------------------------------------------------------

    def start(self) -> None:
        super().start()
        if self._imported is not None and not self._imported.is_set():
            self._import_waiter = asyncio.create_task(self._wake_once_imported(self._imported))

    async def close(self) -> None:
        if self._import_waiter is not None:
            self._import_waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._import_waiter
        await super().close()

    async def _wake_once_imported(self, imported: asyncio.Event) -> None:
        await imported.wait()
        self.wake()  # the end notices held back can go now

    def also_wake(self) -> asyncio.Event:
        return self._changed()  # a switch: a notice is owed

    async def round(self) -> float:
        await self.notify_due()
        now = self._clock()
        due = min((b.next_try_at for b in self._backoff.values()), default=None)
        return self.nap_until(due, now, MAX_NAP)

    async def notify_due(self) -> int:
        """Send each notice owed now to each recipient that does not have it yet; return how
        many went."""
        now = self._clock()
        history = await asyncio.to_thread(self.journal.mode_history, HISTORY)
        owed = [n for n in notices.owed(history, now) if n not in self._complete]
        claims = {self._claim(n, r) for n in owed for r in self.settings.recipients()}
        self._backoff = {c: b for c, b in self._backoff.items() if c in claims}
        sent = 0
        try:
            for notice in owed:
                if self.stopping:
                    break
                if notice.kind is Kind.END and not self._record_imported():
                    continue  # woken when it is (_wake_once_imported)
                sent += await self._notify(notice, now)
        finally:
            await self.batch_done()
        return sent

    async def _notify(self, notice: Notice, now: datetime) -> int:
        entries = await asyncio.to_thread(self.journal.audit_entries, notices.SENT_ACTION,
                                          outage_key(notice.outage.engaged.at))
        have = notices.sent_to([e.detail for e in entries], notice)
        owed = [r for r in self.settings.recipients() if r not in have]
        held = await self._held(notice) if owed and notice.kind is Kind.END else None
        sent = 0
        down: dict[str, str] = {}  # channel -> why, once it could not be reached this round
        for recipient in owed:
            if self.stopping:
                break
            claim = self._claim(notice, recipient)
            waiting = self._backoff.get(claim)
            if waiting is not None and waiting.next_try_at > now:
                continue
            channel, _, to = recipient.partition(":")
            if channel in down:  # put back, as the rest of a batch (see NotSent)
                self._failed(notice, claim, channel, down[channel])
                continue
            if not await asyncio.to_thread(
                    self.journal.claim_lease, claim, self.holder, self._clock(),
                    self._clock() + timedelta(seconds=CLAIM_SECONDS)):
                continue  # another controller is sending it; the audit log will say
            try:
                if await self._already_sent(notice, recipient):
                    self._backoff.pop(claim, None)
                    sent += 1  # by another controller, since this round read the log
                    continue
                try:
                    await self._send(notice, channel, recipient, to, now, held)
                except NotSent as exc:
                    if exc.unreachable:
                        down[channel] = exc.reason
                    self._failed(notice, claim, channel, exc.reason)
                    continue
                await asyncio.to_thread(self.journal.audit, notice_entry(
                    self._clock(), notice, recipient))
            finally:
                with contextlib.suppress(JournalError):
                    await asyncio.to_thread(self.journal.release_lease, claim, self.holder)
            self._backoff.pop(claim, None)
            sent += 1
        if sent == len(owed):
            self._complete.add(notice)
        return sent

    def _record_imported(self) -> bool:
        if self._imported is None or self._imported.is_set():
            return True
        if not self._said_waiting:
            self._said_waiting = True
            log.info("notices: the end notice waits for the PBX's call record to be imported "
                     "(the calls it answered alone are counted); it is read once the PBX is "
                     "reached")
        return False

    @staticmethod
    def _claim(notice: Notice, recipient: str) -> str:
        return "notice " + notices.audit_detail(notice, recipient)

    async def _held(self, notice: Notice) -> Held:
        """What the ended outage held, and where delivery to the inbox stands now."""
        assert notice.outage.ended is not None
        attempts = await asyncio.to_thread(self.journal.held_between,
                                           notice.outage.engaged.at, notice.outage.ended.at)
        backlog = sum((await asyncio.to_thread(self.journal.held)).values())
        return Held(attempts, backlog, self.settings.inbox_blocked if backlog else "")

    async def _already_sent(self, notice: Notice, recipient: str) -> bool:
        """Whether the audit log has ``recipient``'s ``notice`` (read under the claim:
        another controller may have sent it since this round read the log)."""
        detail = notices.audit_detail(notice, recipient)
        entries = await asyncio.to_thread(self.journal.audit_entries, notices.SENT_ACTION,
                                          detail)
        return any(e.detail == detail for e in entries)

    def _failed(self, notice: Notice, claim: str, channel: str, reason: str) -> None:
        before = self._backoff.get(claim)
        tries = (before.tries if before is not None else 0) + 1
        self._backoff[claim] = _Backoff(tries, retry.next_try(self._clock(), tries))
        log.warning("notices: the %s notice by %s not sent (try %d: %s); next try in %.0f s",
                    notice.kind.value, channel, tries, reason, retry.retry_delay(tries))

    async def _send(self, notice: Notice, channel: str, recipient: str, to: str,
                    now: datetime, held: Held | None) -> None:
        s = self.settings
        outage = notice.outage
        if channel == "email":
            message_id = notices.message_id(s.practice, s.mail_from, notice, recipient)
            if notice.kind is Kind.START:
                message = notices.start_email(
                    practice=s.practice, sender=s.mail_from, to=to, message_id=message_id,
                    engaged=outage.engaged, sent_at=now, tz=s.tz, announcement=s.announcement)
            else:
                assert held is not None
                message = notices.end_email(
                    practice=s.practice, sender=s.mail_from, to=to, message_id=message_id,
                    outage=outage, sent_at=now, tz=s.tz, held=held, status_url=s.status_url)
            await self.email(message)
            log.info("notices: the %s notice of the outage emailed to %s", notice.kind.value,
                     to)
            return
        if notice.kind is Kind.START:
            text = notices.start_sms(s.practice, outage.engaged, s.tz)
        else:
            assert held is not None
            text = notices.end_sms(s.practice, outage, s.tz, held)
        if await self.text(s.sms_from, to, text, f"notices: the {notice.kind.value} notice"):
            log.info("notices: the %s notice of the outage texted to %s", notice.kind.value,
                     redact(to))


def notice_entry(at: datetime, notice: Notice, recipient: str) -> AuditEntry:
    return AuditEntry(at, notices.ACTOR, notices.SENT_ACTION,
                      notices.audit_detail(notice, recipient))


def status_url(status: StatusListener | None) -> str:
    """Where the status page is read: the status listener's address (a wildcard one named
    by this machine's host name), or "" when there is none."""
    if status is None:
        return ""
    host = status.listen.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{status.listen.port}/status"


def notices_for(directory: Directory, journal: Journal, clock: Clock,
                changed: Callable[[], asyncio.Event],
                record_imported: asyncio.Event | None = None) -> OutageNotices | None:
    """The practice's outage notices, or None (with the reason logged) if they cannot go:
    they need email recipients and ``connections.smtp``; SMS ones also the gateway.
    ``record_imported``: see OutageNotices."""
    senders = outage_senders(directory, "outage notice")
    smtp = directory.connections.smtp
    if senders is None or smtp is None:
        return None
    alerts = directory.backup.alerts
    gateway = directory.connections.sms_gateway
    announcement = directory.backup.announcement
    settings = NoticeSettings(
        practice=directory.practice.name, tz=directory.practice.timezone, emails=alerts.emails,
        sms=senders.sms_numbers, mail_from=smtp.sender,
        sms_from=gateway.sender if gateway is not None else "",
        announcement=announcement.text if not announcement.file else "",
        status_url=status_url(directory.connections.status),
        inbox_blocked=why_blocked(directory))
    return OutageNotices(journal, settings, senders.mailer, senders.sms, clock, changed,
                         record_imported)
