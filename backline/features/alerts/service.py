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
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from aiohttp import web

from backline.core.e164 import redact
from backline.core.model import AlertKind, Directory
from backline.features.alerts.compose import alert_email, alert_sms, new_message_id
from backline.features.alerts.gather import GatherPolicy, raises_alert
from backline.features.links import tokens as links
from backline.features.links.server import RefusalJudge, fax_files, make_link_app
from backline.features.sending import retry
from backline.features.sending.mail import MailError, SmtpMailer
from backline.features.sending.rounds import Rounds
from backline.features.sms.gateway import (
    GatewayError,
    GatewayProtocolError,
    GatewayRefused,
    SmsGatewayClient,
)
from backline.features.sms.twilio import UnsendableSms
from backline.journal import AlertChannel, AlertDelivery, Attempt, Journal, JournalError

log = logging.getLogger("backline.notifier")

Clock = Callable[[], datetime]

LEASE_SECONDS = 120.0
"""How long a claimed delivery is ours: longer than any one try can take (SMTP commands time
out after 30 s), so another controller on the journal never sends it at the same time."""

MAX_NAP = 30.0  # seconds the task sleeps at most, in case another controller added work
FAILED_ROUND_NAP = 5.0


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...
    async def close(self) -> None: ...


class SmsSender(Protocol):
    async def send(self, sender: str, to: str, body: str) -> str: ...
    async def close(self) -> None: ...


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


class Notifier:
    """Start with :meth:`start`, stop with :meth:`close`.  ``clock`` returns aware datetimes;
    tests pass one they move by hand (then call :meth:`wake`)."""

    def __init__(self, journal: Journal, settings: AlertSettings, mailer: Mailer,
                 sms: SmsSender | None, clock: Clock, *, policy: GatherPolicy | None = None,
                 files: Callable[[str], Path] = Path) -> None:
        if settings.sms and sms is None:
            raise ValueError("SMS recipients need an SMS gateway")
        self.journal = journal
        self.settings = settings
        self._mailer = mailer
        self._sms = sms
        self._clock = clock
        self._policy = policy or GatherPolicy()
        self._files = files
        self._recipients = settings.recipients()
        self._pending: list[int] = []
        self._rounds = Rounds("backline-alerts")
        # Told of each try's result, (channel, True, "") or (channel, False, why): the status
        # page's verdict.
        self.on_result: Callable[[AlertChannel, bool, str], None] | None = None

    # -- the controller's side -------------------------------------------------------------

    def attempt_recorded(self, attempt: Attempt) -> None:
        """A new attempt is in the journal: alert for it if it came in an outage."""
        if raises_alert(attempt):
            self._pending.append(attempt.id)
            self._rounds.woken.set()

    def link_app(self, refusals: RefusalJudge | None = None) -> web.Application:
        """The link pages, to mount with ``app.add_subapp("/a", ...)``."""
        return make_link_app(self.journal, self.settings.practice, self.settings.tz,
                             self._clock, self._files, refusals)

    def start(self) -> None:
        self._rounds.start(self._run)

    def wake(self) -> None:
        """Look for due work now (after a test moved the clock, say)."""
        self._rounds.wake()

    async def close(self) -> None:
        """Stop the task after the send in progress (if any); close the connections."""
        await self._rounds.stop()
        await self._mailer.close()
        if self._sms is not None:
            await self._sms.close()

    async def settle(self, within: float = 10.0) -> None:
        """Wake the task and wait until a whole round that began after this call is done:
        what was due at the clock's current time has been tried.  TimeoutError after
        ``within`` s.  For tests and the benchmark, which move the clock by hand."""
        await self._rounds.settle(within)

    # -- the task --------------------------------------------------------------------------

    async def _run(self) -> None:
        with contextlib.suppress(JournalError):
            await self._catch_up()
        while not self._rounds.stopping:
            self._rounds.begin()
            failed = True
            try:
                await self._gather_pending()
                await self.deliver_due()
                nap = await self._nap()
                failed = False
            except JournalError as exc:
                log.error("alerts: the journal failed (%s); trying again shortly", exc)
            except Exception:
                # The task must outlive one bad round: alerts are what tells anyone at all.
                log.exception("alerts: a sending round failed; trying again shortly")
            await self._rounds.end()
            if failed:
                nap = FAILED_ROUND_NAP  # not at once: the same failure would spin the loop
            elif self._rounds.stopping or self._pending:
                continue
            if nap > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._rounds.woken.wait(), nap)

    async def _catch_up(self) -> None:
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

    async def _nap(self) -> float:
        due = await asyncio.to_thread(self.journal.next_delivery_at)
        if due is None:
            return MAX_NAP
        return min(max((due - self._clock()).total_seconds(), 0.0), MAX_NAP)

    async def deliver_due(self) -> int:
        """Send every delivery due now; return how many were sent."""
        now = self._clock()
        due = await asyncio.to_thread(self.journal.claim_due_deliveries, now,
                                      now + timedelta(seconds=LEASE_SECONDS))
        if not due:
            return 0
        emails = [d for d in due if d.channel is AlertChannel.EMAIL]
        texts = [d for d in due if d.channel is AlertChannel.SMS]
        try:
            # Two lanes, so a stuck SMS gateway does not hold the emails back (or the reverse).
            sent = await asyncio.gather(self._lane(emails, self._send_email),
                                        self._lane(texts, self._send_sms))
        finally:
            await self._mailer.close()
        return sum(sent)

    async def _lane(self, deliveries: Sequence[AlertDelivery],
                    send: Callable[[AlertDelivery], Awaitable[None]]) -> int:
        sent = 0
        for i, d in enumerate(deliveries):
            if self._rounds.stopping:
                await asyncio.to_thread(self.journal.release_deliveries,
                                        [x.id for x in deliveries[i:]])
                break
            try:
                await send(d)
            except _Unreachable as exc:
                # The server cannot be reached at all: every other delivery in this lane
                # would wait out the same failure (a timeout each), so all wait for the retry.
                for rest in deliveries[i:]:
                    await self._failed(rest, exc.reason)
                break
            except _NotSent as exc:
                await self._failed(d, exc.reason)
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
        message = alert_email(
            practice=self.settings.practice, sender=self.settings.mail_from, to=d.recipient,
            message_id=d.message_id, alert_at=d.alert_due_at, sent_at=now,
            tz=self.settings.tz, link=links.link_url(self.settings.base_url, token),
            link_hours=self.settings.link_hours)
        try:
            await self._mailer.send(message)
        except MailError as exc:
            raise (_Unreachable if exc.code is None else _NotSent)(exc.reason) from None
        log.info("alerts: alert %d emailed to %s", d.alert_id, d.recipient)

    async def _send_sms(self, d: AlertDelivery) -> None:
        assert self._sms is not None
        try:
            await self._sms.send(self.settings.sms_from, d.recipient,
                                 alert_sms(self.settings.practice))
        except GatewayProtocolError as exc:
            # The gateway said 2xx: it took the message.  Sending again could text twice.
            log.warning("alerts: alert %d texted to %s, but %s", d.alert_id,
                        redact(d.recipient), exc.reason)
            return
        except (GatewayRefused, UnsendableSms) as exc:
            # About this message (a 4xx, a number the gateway will not take): the others in
            # the lane may still go.
            raise _NotSent(str(exc)) from None
        except GatewayError as exc:
            # Not reached, or no answer.  If the request had left (maybe_sent), the retry
            # may text twice: a rare double text beats a lost alert (see the gateway client).
            raise _Unreachable(str(exc)) from None
        log.info("alerts: alert %d texted to %s", d.alert_id, redact(d.recipient))


class _NotSent(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Unreachable(_NotSent):
    pass


@dataclass(frozen=True, slots=True)
class Senders:
    """How the alert recipients are reached: SMTP always, the SMS gateway with ``email+sms``
    (``sms_numbers`` is empty when it cannot be used)."""

    mailer: SmtpMailer
    sms: SmsGatewayClient | None
    sms_numbers: tuple[str, ...]


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
