"""Sending the outage SMS auto-reply: a background task beside the alerts.

Wiring only; whether a reply is owed is :func:`backline.features.sms.reply.auto_reply`, when a
failed one is tried again is :mod:`backline.features.sending.retry` (5 s doubling to 5 min), and
the state lives in the journal (``backline.journal.replies``), so a controller restart resumes
where the last one stopped:

1. The controller journals each inbound SMS, then its reply (pending, or not sent and why),
   and wakes this task.  At start, outage SMS of the last hours that have no reply yet (a
   controller stopped between the two writes) get theirs.
2. While the outage lasts, each round claims the replies that are due (a lease, as for alert
   deliveries: several controllers on one journal send each once) and sends them, one try
   each; the gateway client itself does not retry, the durable schedule does.
3. A try that fails is recorded with its reason and is due again after the backoff; one that
   the gateway takes is recorded as sent (the attempt's outcome becomes ``auto-replied``) and
   is never tried again.  A message no gateway would take is recorded as not sent.
4. Once the mode is normal, an open reply is closed as not sent: its text says the practice
   may not see the message until the system is restored, which is no longer true.  The inbox
   drain does the same for the item it is about to deliver, so the inbox always gets the
   reply's final state (see ``backline.features.inbox.service``).

A dropped connection after the request left may have sent the reply although the try failed;
the retry may then text twice.  As for alerts, a rare double text beats a lost reply.  No log
line holds a number (they are redacted) or any text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from backline.core.connections import SmsGateway
from backline.core.e164 import redact
from backline.core.outage import Mode
from backline.features.sending import retry
from backline.features.sending.leased import Clock, LeasedDelivery, NotSent
from backline.features.sms.gateway import SmsGatewayClient
from backline.features.sms.reply import OUTAGE_OVER, NoReply, ReplyPlan, SendReply
from backline.journal import Attempt, Journal, JournalError
from backline.journal.replies import SmsReply

log = logging.getLogger("backline.sms.reply")

LEASE_SECONDS = 120.0
"""A claimed reply is ours this long: far more than one try (the client's 10 s timeout), so
no other controller sends it meanwhile, and a dead controller's claim lapses."""
MAX_NAP = 30.0  # seconds the task sleeps at most, in case another controller added work
CATCH_UP_HOURS = 12


class AutoReplies(LeasedDelivery):
    """Start with :meth:`start`, stop with :meth:`close`.  ``plan`` says what reply an
    attempt is owed (the controller's policy); ``mode`` is the controller's mode now."""

    def __init__(self, journal: Journal, gateway: SmsGateway | None, text: str, clock: Clock,
                 mode: Callable[[], Mode], plan: Callable[[Attempt], ReplyPlan | None]) -> None:
        super().__init__("backline-sms-replies", "sms replies", log, journal, clock)
        self._gateway = gateway
        self._reply = text
        self._mode = mode
        self._plan = plan

    def start(self) -> None:
        """Without a gateway there is nothing to send: replies are recorded as not sent."""
        if self._gateway is not None:
            super().start()

    async def keep(self, attempt: Attempt) -> None:
        """Journal the reply ``attempt`` is owed, if any (idempotent), and wake the task."""
        plan = self._plan(attempt)
        if plan is None:
            return
        why = plan.why if isinstance(plan, NoReply) else ""
        new = await asyncio.to_thread(self.journal.add_sms_reply, attempt.id, attempt.recipient,
                                      attempt.sender, self._clock(), why)
        if new and isinstance(plan, NoReply):
            log.warning("no automatic reply to %s from %s: %s", redact(attempt.sender),
                        attempt.recipient, plan.why)
        if new and isinstance(plan, SendReply):
            self.wake()

    # -- the task --------------------------------------------------------------------------

    async def round(self) -> float:
        if self._mode() is not Mode.OUTAGE:
            closed = await asyncio.to_thread(self.journal.close_open_replies, self._clock(),
                                             OUTAGE_OVER)
            if closed:
                log.warning("%d automatic repl(ies) not sent: %s", closed, OUTAGE_OVER)
            return MAX_NAP
        await self.send_due()
        due = await asyncio.to_thread(self.journal.next_reply_at)
        return self.nap_until(due, self._clock(), MAX_NAP)

    async def catch_up(self) -> None:
        since = self._clock() - timedelta(hours=CATCH_UP_HOURS)
        try:
            owed = await asyncio.to_thread(self.journal.sms_without_reply, since)
        except JournalError as exc:
            log.error("sms replies: cannot look for SMS still owed a reply: %s", exc)
            raise
        if owed:
            log.warning("sms replies: %d outage SMS journaled before a restart had no reply "
                        "recorded; recording them now", len(owed))
        for attempt in owed:
            await self.keep(attempt)

    async def send_due(self) -> int:
        """Try every reply due now, once; return how many were sent."""
        due = await self.claim_due(self.journal.claim_due_replies, LEASE_SECONDS)
        sent = 0
        for i, reply in enumerate(due):
            if self.stopping:
                await asyncio.to_thread(self.journal.release_replies, [r.id for r in due[i:]])
                break
            try:
                sid = await self._send(reply)
            except NotSent as exc:
                if exc.never:
                    await asyncio.to_thread(self.journal.reply_not_sent, reply.id, exc.reason)
                    log.error("automatic reply to %s not sent: %s", redact(reply.recipient),
                              exc.reason)
                    continue
                # Unreachable: the rest of the batch is put back, due again (see NotSent).
                for rest in due[i:] if exc.unreachable else (reply,):
                    await self._failed(rest, exc.reason)
                if exc.unreachable:
                    break
                continue
            await asyncio.to_thread(self.journal.reply_sent, reply.id, self._clock(), sid)
            log.info("automatic reply to %s sent", redact(reply.recipient))
            sent += 1
        return sent

    async def _send(self, reply: SmsReply) -> str:
        from backline.app.secrets import SecretMissing, read_secret

        assert self._gateway is not None  # the task runs only with one
        if self._texts is None:  # the token is read when first needed: it may come later
            try:
                token = read_secret(self._gateway.token, "connections.sms_gateway.token")
            except SecretMissing as exc:
                raise NotSent(str(exc), unreachable=True) from None
            self._texts = SmsGatewayClient(
                self._gateway.url, self._gateway.account, token, attempts=1,
                insecure_cleartext=self._gateway.insecure_cleartext)
        return await self.text(reply.sender, reply.recipient, self._reply, "automatic reply")

    async def _failed(self, reply: SmsReply, why: str) -> None:
        tries = reply.tries + 1
        await asyncio.to_thread(self.journal.reply_failed, reply.id,
                                retry.next_try(self._clock(), tries), why)
        log.warning("automatic reply to %s not sent (try %d: %s); next try in %.0f s",
                    redact(reply.recipient), tries, why, retry.retry_delay(tries))
