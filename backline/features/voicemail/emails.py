"""Voicemail emails as a feature: each member of the number who opted in
(``users[i].voicemail_email``) is told of each message by an email that carries only a link
to a page where they play it (backline.features.links.voicemail_server).

1. A message journaled wakes the task; each round owes one email per member who opted in,
   once per message and member (the journal's unique row), for every message not yet
   considered (at start: those of the last ``backup.link_hours``, so a restart between the
   message and its emails loses none);
2. the due emails are claimed under a lease (controllers sharing a journal send each once),
   each try mints a link kept only as its hash, and a failed send is due again after a
   backoff (5 s doubling to 5 min), across restarts; each sent email is audited.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from backline.core.model import Directory
from backline.core.ownership import OwnershipBook
from backline.core.records import AttemptKind
from backline.features.alerts.service import mailer_for
from backline.features.links import tokens as links
from backline.features.links.voicemail_server import make_voicemail_app
from backline.features.seam import Background, Context, Routes
from backline.features.sending import retry
from backline.features.sending.leased import Clock, LeasedDelivery, Mailer, NotSent
from backline.features.status.health import idle, off
from backline.features.voicemail.compose import voicemail_email
from backline.journal import Attempt, AuditEntry, Journal
from backline.journal.voicemail import VoicemailEmail

log = logging.getLogger("backline.voicemail")

LEASE_SECONDS = 120.0
MAX_NAP = 30.0


class VoicemailEmails(LeasedDelivery):
    def __init__(self, directory: Directory, journal: Journal, book: OwnershipBook,
                 mailer: Mailer | None, clock: Clock) -> None:
        super().__init__("backline-voicemail-emails", "voicemail emails", log, journal,
                         clock, mailer=mailer)
        self.directory = directory
        self.book = book
        smtp, pages = directory.connections.smtp, directory.connections.pages
        self._sender = smtp.sender if smtp is not None else ""
        self._base_url = pages.base_url if pages is not None else ""
        self._considered = 0  # messages up to this id have had their emails owed

    def recipients(self, message: Attempt) -> list[tuple[str, str]]:
        """(user, address) of each active member of the message's number who opted in."""
        # The book's practice: a reload (who opted in, their addresses) applies at once.
        users = {u.id: u for u in self.book.directory.users}
        return [(m, users[m].email) for m in self.book.sorted_members(message.recipient)
                if m in users and users[m].voicemail_email and users[m].email]

    async def round(self) -> float:
        await self._owe()
        due = await self.claim_due(self.journal.claim_due_voicemail_emails, LEASE_SECONDS)
        for n, email in enumerate(due):
            if self.stopping:
                break
            try:
                await self._send(email)
            except NotSent as exc:
                # The relay is unreachable: the rest of the batch is put back, not tried.
                rest = due[n:] if exc.unreachable else [email]
                for e in rest:
                    await self._failed(e, exc.reason)
                if exc.unreachable:
                    break
        await self.batch_done()
        after = await asyncio.to_thread(self.journal.next_voicemail_email_at)
        return self.nap_until(after, self._clock(), MAX_NAP)

    async def _owe(self) -> None:
        since = self._clock() - timedelta(hours=self.book.directory.backup.link_hours)
        messages = await asyncio.to_thread(self.journal.voicemail_unconsidered, since,
                                           self._considered)
        for message in messages:
            told = self.recipients(message)
            if told:
                await asyncio.to_thread(self.journal.owe_voicemail_emails, message.id, told,
                                        self._clock())
            self._considered = max(self._considered, message.id)

    async def _send(self, e: VoicemailEmail) -> None:
        now = self._clock()
        hours = self.book.directory.backup.link_hours
        token = links.new_token()
        # The link is durable before the email leaves: a page that opens later needs it.
        await asyncio.to_thread(self.journal.add_voicemail_link, e.id, e.attempt.id,
                                links.token_hash(token), now, links.expiry(now, hours))
        number = self.book.number(e.attempt.recipient)
        domain = self._sender.rpartition("@")[2] or "backline.invalid"
        practice = self.book.directory.practice
        await self.email(voicemail_email(
            practice=practice.name, line=number.caller_id_name if number else "",
            sender=self._sender, to=e.recipient,
            message_id=f"<voicemail.{e.id}.{e.attempt.id}@{domain}>", left_at=e.attempt.at,
            sent_at=now, tz=practice.timezone,
            link=links.link_url(self._base_url, token, links.VOICEMAIL_PREFIX),
            link_hours=hours))
        await asyncio.to_thread(self.journal.voicemail_email_sent, e.id, now)
        await asyncio.to_thread(self.journal.audit, AuditEntry(
            now, "backline", "voicemail.email.sent", f"{e.attempt.key} user:{e.user_id}"))
        log.info("voicemail email sent to %s", e.user_id)

    async def _failed(self, e: VoicemailEmail, reason: str) -> None:
        now, tries = self._clock(), e.tries + 1
        await asyncio.to_thread(self.journal.voicemail_email_failed, e.id,
                                retry.next_try(now, tries), reason)
        log.error("voicemail email to %s not sent (try %d: %s); next try in %.0f s",
                  e.user_id, tries, reason, retry.retry_delay(tries))


class VoicemailEmailFeature(Background[VoicemailEmails]):
    """The emails (``service``) and the link pages they point to (``/v/``)."""

    def __init__(self, context: Context, emails: VoicemailEmails) -> None:
        super().__init__(emails)
        self._context = context

    def routes(self) -> Routes:
        c = self._context
        app = make_voicemail_app(c.journal, c.directory.practice.name,
                                 c.directory.practice.timezone, c.clock, c.refusals)
        return Routes(public_apps=((links.VOICEMAIL_PREFIX.rstrip("/"), app),))

    def attempt_recorded(self, attempt: Attempt) -> None:
        if attempt.kind is AttemptKind.VOICEMAIL:
            self.service.wake()  # queues only: the PBX is waiting


def build(context: Context) -> VoicemailEmailFeature | None:
    """The voicemail emails, or None when nobody opted in or they cannot be sent (the status
    page says why)."""
    d = context.directory
    if not any(u.voicemail_email for u in d.users):
        return None
    why = ("connections.smtp is not configured" if d.connections.smtp is None else
           "connections.pages is not configured (the email's link needs it)"
           if d.connections.pages is None else "")
    mailer = mailer_for(d, "voicemail email") if not why else None
    if mailer is None:
        context.health["voicemail_emails"] = off(
            f"no voicemail email will be sent: {why or 'connections.smtp is not usable'}")
        return None
    context.health["voicemail_emails"] = idle("no voicemail email sent yet")
    return VoicemailEmailFeature(context, VoicemailEmails(d, context.journal, context.book,
                                                          mailer, context.clock))
