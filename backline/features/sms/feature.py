"""SMS as a feature: the signed webhook in, each inbound SMS journaled, and in an outage its
automatic reply (sent and retried by :class:`backline.features.sms.auto_replies.AutoReplies`).
See :mod:`backline.features.seam`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from backline.core import e164
from backline.core.outage import Mode, ModeState
from backline.features.seam import Background, Context, Routes
from backline.features.sms.auto_replies import AutoReplies
from backline.features.sms.reply import ReplyPlan, auto_reply
from backline.features.sms.twilio import InboundSms
from backline.features.sms.webhook import make_sms_routes, signing_secret
from backline.journal import Attempt, AttemptKind, AuditEntry, Delivery, NewAttempt, Outcome

log = logging.getLogger("backline.controller")


class Sms(Background[AutoReplies]):
    """Inbound SMS and the outage auto-reply (``service``).  The webhook is served only
    with both ``connections.sms_gateway`` and ``connections.pages``; the replies are
    journaled either way (not sent, and why, without a gateway)."""

    def __init__(self, context: Context) -> None:
        self._context = context
        d = context.directory
        super().__init__(AutoReplies(context.journal, d.connections.sms_gateway,
                                     d.backup.sms_reply, context.clock, self._mode,
                                     self._reply_plan))

    def _mode(self) -> Mode:
        return self._context.mode().mode

    def mode_changed(self, state: ModeState) -> None:
        self.service.wake()  # replies go in an outage, and are closed after it

    def routes(self) -> Routes:
        gateway = self._context.directory.connections.sms_gateway
        pages = self._context.directory.connections.pages
        if gateway is None or pages is None:
            return Routes()
        return Routes(public=tuple(make_sms_routes(pages.base_url, self._signing_secret,
                                                   self.on_sms, self.on_sms_refused,
                                                   self._context.refusals.refused)))

    def _signing_secret(self) -> str:
        return signing_secret(self._context, "every inbound SMS is refused")

    async def on_sms(self, sms: InboundSms) -> None:
        """A signed inbound SMS: journaled (fsynced), and in an outage its automatic reply
        with it (to be sent, or not sent and why), before the gateway hears 200.

        The outcome is ``received`` until the reply is sent (then ``auto-replied``): the
        record says what happened, not what was meant to."""
        mode = self._mode()
        number = self._context.book.number(sms.recipient)
        outcome = Outcome.REFUSED if number is None else Outcome.RECEIVED
        new = await self._context.record_attempt(NewAttempt(
            key=sms.journal_key, at=datetime.now(UTC), kind=AttemptKind.SMS, mode=mode,
            sender=sms.sender, sender_raw=sms.sender_raw, recipient=sms.recipient,
            outcome=outcome, text=sms.body,
            delivery=Delivery.HELD if number is not None else Delivery.NOT_NEEDED))
        log.info("SMS from %s to %s: %s%s", e164.redact(sms.sender), sms.recipient,
                 outcome.value, "" if new else " (a retry of one already recorded)")
        # As first recorded (a webhook posted again finds the first one's mode), and every
        # time: a crash between the two writes is mended by the gateway's retry.
        recorded = await asyncio.to_thread(self._context.journal.attempt, sms.journal_key)
        if recorded is not None:
            await self.service.keep(recorded)

    def _reply_plan(self, attempt: Attempt) -> ReplyPlan | None:
        """The automatic reply ``attempt`` is owed (None: none at all)."""
        if attempt.kind is not AttemptKind.SMS or attempt.outcome is Outcome.REFUSED:
            return None
        return auto_reply(self._context.book.number(attempt.recipient), attempt.mode,
                          self._context.directory.connections.sms_gateway)

    async def on_sms_refused(self, reason: str, remote: str) -> None:
        await asyncio.to_thread(self._context.journal.audit, AuditEntry(
            datetime.now(UTC), f"sms-webhook:{remote[:64]}", "sms.refused", reason[:200]))


def build(context: Context) -> Sms:
    return Sms(context)
