"""The on-site notice of every 911 call (Kari's Law): email, SMS and a call to
each listed desk phone, with who, which desk phone, where and when.

Wiring only; what the notice says is :func:`backline.core.emergency.notice`.  The 911 call itself
never waits on any of this: the PBX dials it on its own and tells the controller afterwards
(an AMI event at once, or its call record when the controller returns).  Then:

1. :meth:`EmergencyNotices.call_placed` records the call and one pending notice per person
   in one journal transaction (once per call, however often the PBX tells of it) and wakes
   the task;
2. the task claims the due notices (a lease, so that controllers sharing a journal do not
   both send), sends them, and marks each sent, or due again after a backoff (5 s doubling
   to 5 min): email and SMS until they go, across restarts; a desk phone that does not take
   the call for ``PHONE_NOTICE_MINUTES`` is given up on (email and SMS carry the notice).

Each call and each sent notice is also written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Protocol

from backline.core.e164 import redact
from backline.core.emergency import EmergencyCall, Notice, NoticeUnheard, describe, notice
from backline.core.model import Directory
from backline.features.alerts.service import mailer_for, sms_client_for
from backline.features.seam import Background, Context
from backline.features.sending import retry
from backline.features.sending.leased import (
    Clock,
    LeasedDelivery,
    Mailer,
    NotSent,
    SmsSender,
)
from backline.journal import AuditEntry, Journal
from backline.journal.emergency import EmergencyNotice, NoticeState

log = logging.getLogger("backline.emergency")

LEASE_SECONDS = 120.0  # longer than one try can take (a desk phone rings 30 s at most)
MAX_NAP = 30.0
PHONE_NOTICE_MINUTES = 15.0  # after that a ringing desk phone tells nobody anything new
ACTOR = "backline"


class NoticeCaller(Protocol):
    """The PBX side: call a desk phone and play it the notice (the Asterisk driver)."""

    async def call_with_notice(self, desk_phone: str, about_phone: str, at: datetime
                               ) -> None:
        """Return once the desk phone answered and heard it; raise :class:`NoticeUnheard`
        (with why) if it could not be called or did not answer."""


class EmergencyNotices(LeasedDelivery):
    """Start with :meth:`start`, stop with :meth:`close`; ``phone`` is attached once the PBX
    driver exists (desk-phone notices wait for it)."""

    def __init__(self, directory: Directory, journal: Journal, mailer: Mailer | None,
                 sms: SmsSender | None, clock: Clock, *, node: str = "") -> None:
        super().__init__("backline-emergency-notices", "emergency notices", log, journal,
                         clock, mailer=mailer, sms=sms)
        self.directory = directory
        self.phone: NoticeCaller | None = None
        self._node = node
        smtp = directory.connections.smtp
        gateway = directory.connections.sms_gateway
        self._mail_from = smtp.sender if smtp is not None else ""
        self._sms_from = gateway.sender if gateway is not None else ""

    async def call_placed(self, call: EmergencyCall, *, late: bool) -> bool:
        """Record ``call`` and the notices it owes, once; True if it was new."""
        who, where = describe(self.directory, call.desk_phone)
        notify = self.directory.emergency.notify
        recipients = [("email", e) for e in notify.emails] + \
            [("sms", n) for n in notify.sms] + [("desk-phone", p) for p in notify.desk_phones]
        new = await asyncio.to_thread(
            self.journal.record_emergency_call, call.key, call.at, call.desk_phone,
            call.dialled, who, where, recipients, late=late, node=self._node)
        if new:
            log.warning("EMERGENCY: a %s call was placed from %s%s; notifying %d", call.dialled,
                        who, " (found in the PBX's record: the notice is late)"
                        if late else "", len(recipients))
            await asyncio.to_thread(self.journal.audit, AuditEntry(
                self._clock(), f"desk-phone:{call.desk_phone}", "emergency.call",
                f"{call.key} {call.dialled}{' late' if late else ''}"))
            self.wake()
        return new

    # -- the task --------------------------------------------------------------------------

    async def round(self) -> float:
        await self.send_due()
        due = await asyncio.to_thread(self.journal.next_notice_at)
        return self.nap_until(due, self._clock(), MAX_NAP)

    async def send_due(self) -> int:
        """Send every notice due now; return how many went."""
        due = await self.claim_due(self.journal.claim_due_notices, LEASE_SECONDS)
        if not due:
            return 0
        # Desk phones ring side by side (each up to 30 s); email and SMS go meanwhile.
        results = await asyncio.gather(*(self._send(n) for n in due))
        return sum(results)

    async def _send(self, n: EmergencyNotice) -> bool:
        try:
            if n.channel == "email":
                await self._email(n)
            elif n.channel == "sms":
                await self._text(n)
            else:
                await self._call(n)
        except (NoticeUnheard, NotSent) as exc:
            # Each goes side by side with the others: one failing holds none of them back.
            await self._failed(n, exc.reason)
            return False
        now = self._clock()
        await asyncio.to_thread(self.journal.notice_done, n.id, NoticeState.SENT, now)
        await asyncio.to_thread(self.journal.audit, AuditEntry(
            now, ACTOR, "emergency.notice.sent", f"{n.call.key} {n.channel}:{n.recipient}"))
        return True

    async def _failed(self, n: EmergencyNotice, reason: str) -> None:
        now = self._clock()
        tries = n.tries + 1
        if n.channel == "desk-phone" and \
                now - n.call.at > timedelta(minutes=PHONE_NOTICE_MINUTES):
            await asyncio.to_thread(self.journal.notice_done, n.id, NoticeState.EXPIRED, now,
                                    reason)
            log.error("emergency notice to desk phone %s given up after %d tries: %s",
                      n.recipient, tries, reason)
            return
        await asyncio.to_thread(self.journal.notice_failed, n.id, retry.next_try(now, tries),
                                reason)
        log.error("emergency notice by %s to %s not sent (try %d: %s); next try in %.0f s",
                  n.channel, redact(n.recipient) if n.channel == "sms" else n.recipient,
                  tries, reason, retry.retry_delay(tries))

    async def _email(self, n: EmergencyNotice) -> None:
        told = self._notice(n)
        message = EmailMessage(policy=SMTP)
        message["From"] = self._mail_from
        message["To"] = n.recipient
        message["Subject"] = told.subject
        message["Date"] = format_datetime(self._clock())
        # Fixed by call and recipient: a resend after a crash is the same message.
        domain = self._mail_from.rpartition("@")[2] or "backline.invalid"
        message["Message-ID"] = f"<emergency.{n.id}.{n.call.id}@{domain}>"
        message["Auto-Submitted"] = "auto-generated"
        message["Importance"] = "high"
        message.set_content(told.text + "\n")
        await self.email(message)
        log.info("emergency notice emailed to %s", n.recipient)

    async def _text(self, n: EmergencyNotice) -> None:
        if await self.text(self._sms_from, n.recipient, self._notice(n).text,
                           "emergency notice"):
            log.info("emergency notice texted to %s", redact(n.recipient))

    def _notice(self, n: EmergencyNotice) -> Notice:
        """What the journal kept of the call (who and where as they were then), worded."""
        practice = self.directory.practice
        return notice(practice.name, practice.timezone, n.call.dialled, n.call.who,
                      n.call.location, n.call.at)

    async def _call(self, n: EmergencyNotice) -> None:
        if self.phone is None:
            raise NoticeUnheard("the PBX is not connected yet")
        await self.phone.call_with_notice(n.recipient, n.call.desk_phone, n.call.at)
        log.info("emergency notice heard on desk phone %s", n.recipient)


def notices_for(directory: Directory, journal: Journal, clock: Clock, *, node: str = ""
                ) -> EmergencyNotices:
    """The practice's emergency notices: with nobody in ``emergency.notify`` the calls are
    still journaled (the status page lists them), and nobody is told."""
    notify = directory.emergency.notify
    mailer = mailer_for(directory, "emergency notice") if notify.emails else None
    sms = sms_client_for(directory, "emergency notice") if notify.sms else None
    return EmergencyNotices(directory, journal, mailer, sms, clock, node=node)


class Emergency(Background[EmergencyNotices]):
    """The notices (``service``) as a feature: every 911 call is journaled and its on-site
    notice sent, once (Kari's Law), with nobody configured too (the status page lists the
    calls)."""


def build(context: Context) -> Emergency:
    return Emergency(notices_for(context.directory, context.journal, context.clock,
                                 node=context.node))
