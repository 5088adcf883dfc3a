"""The notifier: gathers outage attempts into alerts and sends them, by email and SMS.

Wiring only; what an alert says is :mod:`backline.features.alerts.compose`, how attempts are
gathered is :mod:`backline.features.alerts.gather`, when a failed one is retried is
:mod:`backline.features.sending.retry`, and the state lives in the journal, so a controller
restart resumes where the last one stopped:

1. :meth:`Notifier.attempt_recorded` is the controller's hook, called for each attempt newly
   journaled.  It only queues the id and wakes the background task: the PBX waits on the
   controller's ``record_attempt``, and alerting must not add to that wait.
2. The task lists queued attempts on alerts (one journal transaction, see ``Journal.gather``),
   then claims the deliveries that are due and sends them: one email per alert and address,
   each with a link minted just before it goes, and with ``email+sms`` one SMS per number.
3. A delivery that fails is due again after a backoff (5 s doubling to 5 min), forever;
   one that succeeds is marked sent and never picked again.

A controller that stops after journaling an attempt but before gathering it loses nothing:
at start, outage attempts of the last ``link_hours`` that no alert lists are gathered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from backline.core.e164 import redact
from backline.core.model import AlertKind, Directory
from backline.features.alerts.compose import alert_email, alert_sms, new_message_id
from backline.features.alerts.gather import GatherPolicy, raises_alert
from backline.features.links import tokens as links
from backline.features.links.server import RefusalJudge, fax_files, make_link_app
from backline.features.sending import retry
from backline.features.sending.leased import (
    Clock,
    LeasedDelivery,
    Mailer,
    NotSent,
    SmsSender,
)
from backline.features.sending.mail import SmtpMailer
from backline.features.sms.gateway import SmsGatewayClient
from backline.journal import AlertChannel, AlertDelivery, Attempt, Journal, JournalError

log = logging.getLogger("backline.notifier")

LEASE_SECONDS = 120.0
"""How long a claimed delivery is ours: longer than any one try can take (SMTP commands time
out after 30 s), so another controller on the journal never sends it at the same time."""

MAX_NAP = 30.0  # seconds the task sleeps at most, in case another controller added work


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """What the notifier needs to know about the practice."""

    practice: str
    tz: str
    emails: tuple[str, ...]
    sms: tuple[str, ...]
    link_hours: int
    base_url: str     # where the link pages are reached (``connections.pages.base_url``)
    mail_from: str
    sms_from: str = ""

    def recipients(self) -> list[tuple[AlertChannel, str]]:
        return ([(AlertChannel.EMAIL, e) for e in self.emails]
                + [(AlertChannel.SMS, n) for n in self.sms])


class Notifier(LeasedDelivery):
    """Start with :meth:`start`, stop with :meth:`close`.  ``clock`` returns aware datetimes;
    tests pass one they move by hand (then call :meth:`wake`)."""

    def __init__(self, journal: Journal, settings: AlertSettings, mailer: Mailer,
                 sms: SmsSender | None, clock: Clock, *, policy: GatherPolicy | None = None,
                 files: Callable[[str], Path] = Path) -> None:
        super().__init__("backline-alerts", "alerts", log, journal, clock, mailer=mailer,
                         sms=sms, texts_to=settings.sms)
        self.settings = settings
        self._policy = policy or GatherPolicy()
        self._files = files
        self._recipients = settings.recipients()
        self._pending: list[int] = []
        # Told of each try's result, (channel, True, "") or (channel, False, why): the status
        # page's verdict.
        self.on_result: Callable[[AlertChannel, bool, str], None] | None = None

    # -- the controller's side -------------------------------------------------------------

    def attempt_recorded(self, attempt: Attempt) -> None:
        """A new attempt is in the journal: alert for it if it came in an outage."""
        if raises_alert(attempt):
            self._pending.append(attempt.id)
            self.wake()

    def link_app(self, refusals: RefusalJudge | None = None) -> web.Application:
        """The link pages, to mount with ``app.add_subapp("/a", ...)``."""
        return make_link_app(self.journal, self.settings.practice, self.settings.tz,
                             self._clock, self._files, refusals)

    # -- the task --------------------------------------------------------------------------

    async def round(self) -> float:
        await self._gather_pending()
        await self.deliver_due()
        if self._pending:
            return 0.0  # gathered while this round sent: at once
        due = await asyncio.to_thread(self.journal.next_delivery_at)
        return self.nap_until(due, self._clock(), MAX_NAP)

    async def catch_up(self) -> None:
        since = self._clock() - timedelta(hours=self.settings.link_hours)
        try:
            owed = await asyncio.to_thread(self.journal.unalerted_attempts, since)
        except JournalError as exc:
            log.error("alerts: cannot look for attempts still owed an alert: %s", exc)
            raise
        ids = [a.id for a in owed if raises_alert(a)]
        if ids:
            log.warning("alerts: %d attempt(s) journaled before a restart had no alert yet; "
                        "gathering them now", len(ids))
            self._pending[:0] = ids

    async def _gather_pending(self) -> None:
        if not self._pending:
            return
        ids, self._pending = self._pending, []
        sender = self.settings.mail_from
        try:
            await asyncio.to_thread(self.journal.gather, ids, self._clock(),
                                    self._policy.place, self._recipients,
                                    lambda: new_message_id(sender))
        except JournalError:
            self._pending[:0] = ids  # tried again next round
            raise

    async def deliver_due(self) -> int:
        """Send every delivery due now; return how many were sent."""
        due = await self.claim_due(self.journal.claim_due_deliveries, LEASE_SECONDS)
        if not due:
            return 0
        emails = [d for d in due if d.channel is AlertChannel.EMAIL]
        texts = [d for d in due if d.channel is AlertChannel.SMS]
        try:
            # Two lanes, so a stuck SMS gateway does not hold the emails back (or the reverse).
            sent = await asyncio.gather(self._lane(emails, self._send_email),
                                        self._lane(texts, self._send_sms))
        finally:
            await self.batch_done()
        return sum(sent)

    async def _lane(self, deliveries: Sequence[AlertDelivery],
                    send: Callable[[AlertDelivery], Awaitable[None]]) -> int:
        sent = 0
        for i, d in enumerate(deliveries):
            if self.stopping:
                await asyncio.to_thread(self.journal.release_deliveries,
                                        [x.id for x in deliveries[i:]])
                break
            try:
                await send(d)
            except NotSent as exc:
                # Unreachable: the rest of the lane is put back, due again (see NotSent).
                for rest in deliveries[i:] if exc.unreachable else (d,):
                    await self._failed(rest, exc.reason)
                if exc.unreachable:
                    break
            else:
                await asyncio.to_thread(self.journal.delivery_sent, d.id, self._clock())
                sent += 1
                if self.on_result is not None:
                    self.on_result(d.channel, True, "")
        return sent

    async def _failed(self, d: AlertDelivery, reason: str) -> None:
        tries = d.tries + 1
        at = retry.next_try(self._clock(), tries)
        await asyncio.to_thread(self.journal.delivery_failed, d.id, at, reason)
        if self.on_result is not None:
            self.on_result(d.channel, False, reason)
        log.warning("alerts: alert %d by %s not sent (try %d: %s); next try in %.0f s",
                    d.alert_id, d.channel.value, tries, reason, retry.retry_delay(tries))

    async def _send_email(self, d: AlertDelivery) -> None:
        now = self._clock()
        token = links.new_token()
        # The link is durable before the email leaves: a page that opens later needs it.
        await asyncio.to_thread(self.journal.add_alert_link, d.id, links.token_hash(token),
                                now, links.expiry(now, self.settings.link_hours))
        await self.email(alert_email(
            practice=self.settings.practice, sender=self.settings.mail_from, to=d.recipient,
            message_id=d.message_id, alert_at=d.alert_due_at, sent_at=now,
            tz=self.settings.tz, link=links.link_url(self.settings.base_url, token),
            link_hours=self.settings.link_hours))
        log.info("alerts: alert %d emailed to %s", d.alert_id, d.recipient)

    async def _send_sms(self, d: AlertDelivery) -> None:
        if await self.text(self.settings.sms_from, d.recipient,
                           alert_sms(self.settings.practice), f"alerts: alert {d.alert_id}"):
            log.info("alerts: alert %d texted to %s", d.alert_id, redact(d.recipient))


@dataclass(frozen=True, slots=True)
class Senders:
    """How the alert recipients are reached: SMTP always, the SMS gateway with ``email+sms``
    (``sms_numbers`` is empty when it cannot be used)."""

    mailer: SmtpMailer
    sms: SmsGatewayClient | None
    sms_numbers: tuple[str, ...]


def outage_senders(directory: Directory, what: str) -> Senders | None:
    """The senders of what goes to the alert recipients about the outage itself (``what``:
    "outage reminder", "outage notice"), or None (with the reason logged) if it cannot go: it
    needs email recipients and ``connections.smtp``; SMS also the gateway."""
    if not directory.backup.alerts.emails:
        return None
    if directory.connections.smtp is None:
        log.error("backup alerts are configured but connections.smtp is not: no %s will be "
                  "sent", what)
        return None
    return senders_for(directory, what)


def senders_for(directory: Directory, what: str) -> Senders | None:
    """The alert recipients' senders for ``what`` ("alert", "outage reminder"), or None (with
    the reason logged) when no email can go; SMS that cannot go is logged and left out."""
    alerts = directory.backup.alerts
    mailer = mailer_for(directory, what)
    if mailer is None:
        return None
    if alerts.kind is not AlertKind.EMAIL_SMS or not alerts.sms:
        return Senders(mailer, None, ())
    sms = sms_client_for(directory, what)
    if sms is None:
        log.error("%ss go by email only", what)
        return Senders(mailer, None, ())
    return Senders(mailer, sms, alerts.sms)


def mailer_for(directory: Directory, what: str) -> SmtpMailer | None:
    """The SMTP sender for ``what``, or None (the reason logged) without a usable
    ``connections.smtp``."""
    from backline.app.secrets import SecretMissing, read_secret

    smtp = directory.connections.smtp
    if smtp is None:
        return None
    try:
        return SmtpMailer(
            smtp.host, smtp.port, tls=smtp.tls, ca_file=smtp.ca_file,
            username=read_secret(smtp.username, "connections.smtp.username")
            if smtp.username else "",
            password=read_secret(smtp.password, "connections.smtp.password")
            if smtp.password else "")
    except (SecretMissing, ValueError) as exc:
        log.error("%s: no %s will be sent", exc, what)
        return None


def sms_client_for(directory: Directory, what: str) -> SmsGatewayClient | None:
    """The SMS gateway client for ``what``, or None (the reason logged) when the gateway is
    not configured to send."""
    from backline.app.secrets import SecretMissing, read_secret

    gateway = directory.connections.sms_gateway
    try:
        if gateway is None or not gateway.sender:
            raise ValueError(f"SMS {what}s need connections.sms_gateway with a 'from' number")
        # One try per round: the sender's own schedule (durable, across restarts) does the
        # retrying, instead of the client sleeping inside a round.
        return SmsGatewayClient(gateway.url, gateway.account,
                                read_secret(gateway.token, "connections.sms_gateway.token"),
                                attempts=1, insecure_cleartext=gateway.insecure_cleartext)
    except (SecretMissing, ValueError) as exc:
        log.error("%s: no SMS %s will be sent", exc, what)
        return None


def why_no_alerts(directory: Directory) -> str:
    """Why ``notifier_for`` makes no notifier, in the words of the config ("" if it would)."""
    from backline.app.secrets import SecretMissing, read_secret

    smtp = directory.connections.smtp
    if not directory.backup.alerts.emails:
        return "backup.alerts.emails lists no one"
    if smtp is None:
        return "connections.smtp is not configured"
    if directory.connections.pages is None:
        return "connections.pages is not configured (the alert's link needs it)"
    try:
        for secret, what in ((smtp.username, "connections.smtp.username"),
                             (smtp.password, "connections.smtp.password")):
            if secret:
                read_secret(secret, what)
    except SecretMissing as exc:
        return str(exc)
    return ""


def notifier_for(directory: Directory, journal: Journal, clock: Clock, *,
                 policy: GatherPolicy | None = None) -> Notifier | None:
    """The practice's notifier, or None (with the reason logged) if alerts are not set up:
    they need email recipients, ``connections.smtp`` and ``connections.pages``.  ``policy``
    overrides the gathering windows (the benchmark turns gathering off with it)."""
    alerts = directory.backup.alerts
    smtp = directory.connections.smtp
    pages = directory.connections.pages
    gateway = directory.connections.sms_gateway
    if not alerts.emails:
        return None
    if smtp is None or pages is None:
        log.error("backup alerts are configured but connections.%s is not: no alert will "
                  "be sent", "smtp" if smtp is None else "pages")
        return None
    senders = senders_for(directory, "alert")
    if senders is None:
        return None
    storage = directory.connections.storage.url
    base = Path(storage.removeprefix("sqlite://")).parent if storage.startswith("sqlite://") \
        else None
    settings = AlertSettings(
        practice=directory.practice.name, tz=directory.practice.timezone, emails=alerts.emails,
        sms=senders.sms_numbers, link_hours=directory.backup.link_hours,
        base_url=pages.base_url, mail_from=smtp.sender,
        sms_from=gateway.sender if gateway is not None else "")
    return Notifier(journal, settings, senders.mailer, senders.sms, clock, policy=policy,
                    files=fax_files(base))
