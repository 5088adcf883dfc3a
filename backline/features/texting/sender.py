"""Sending the texts staff asked for: a background task beside the auto-replies.

The journal (``backline.journal.texts``) holds each text's state, so a restart resumes where
the last controller stopped.  Each round claims the texts that are due under a lease of this
sender's own (controllers sharing a journal never both try one), and for each writes that it
is being handed to the gateway, then posts it once (the client itself does not retry; the
durable schedule does), then records what came of it:

- the gateway took it: ``sent``, with its sid;
- it certainly did not act on it (no connection, 429, 503): ``failed``, due again after
  :data:`BACKOFF`; a text still unsent :data:`GIVE_UP_AFTER` after it was asked for is
  ``not-sent`` (a text hours late says the wrong thing);
- it refused it for good (a 4xx: bad number, opted out, unregistered sender): ``not-sent``;
- it may have sent it (the link dropped after the request left, a timeout, a 500): the
  Messages API takes no idempotency key, so trying again could text the patient twice:
  ``in-doubt``, never tried again.  The gateway's status callback, if it did send it, says so.

Before each try, inside the claim, the text is decided again by the rule that allowed it
(:func:`backline.core.texting.decide_text`, over the controller's book and conversations as
they are now): while it waited (a retry's backoff, a queue, a controller down) its sender
may have been removed from the conversation or deactivated, the number may have lost them
or its registration, an outage may have been engaged.  Refused now, it is ``not-sent`` with
the refusal, audited, and never handed to the gateway.

In an outage nothing goes out: open texts are closed as ``not-sent`` (outbound messaging is
refused until it ends, and a text sent hours later would be out of date).  No log line holds
a text or a full number.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta

from backline.core.connections import SmsGateway
from backline.core.conversations import ConversationBook
from backline.core.e164 import redact
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.texting import OutboundText, RefuseText, decide_text
from backline.features.sending.leased import Clock, LeasedDelivery
from backline.features.sending.retry import Backoff
from backline.features.sms.gateway import (
    GatewayProtocolError,
    GatewayRefused,
    GatewayUnavailable,
    SmsGatewayClient,
)
from backline.features.sms.twilio import UnsendableSms
from backline.journal import Journal
from backline.journal.texts import StaffText

log = logging.getLogger("backline.texting")

LEASE_SECONDS = 60.0
"""A claimed text is this sender's this long: far more than one try (the client's 10 s
timeout), so no other controller sends it meanwhile, and a dead controller's claim lapses."""
MAX_NAP = 30.0  # seconds the task sleeps at most, in case another controller added work
BACKOFF = Backoff(first=2.0, cap=60.0)  # a person is waiting on it
GIVE_UP_AFTER = timedelta(hours=1)
OUTAGE_ENGAGED = "an outage was engaged before it was sent: outbound messaging is refused"
NO_TOKEN = "the SMS gateway's token cannot be read"


class StaffTexts(LeasedDelivery):
    """Start with :meth:`start`, stop with :meth:`close`.  ``token`` reads the gateway's
    token ("" when it cannot); ``status_url`` is where the gateway is to post a text's
    status ("" for nowhere), ``{id}`` standing for the text's journal id.  ``book`` and
    ``conversations`` are the controller's own, changed in place by a reload and by the
    journal's conversation changes: each try is decided by them as they are then."""

    def __init__(self, journal: Journal, gateway: SmsGateway | None, token: Callable[[], str],
                 clock: Clock, mode: Callable[[], Mode], book: OwnershipBook,
                 conversations: ConversationBook, status_url: str = "") -> None:
        super().__init__("backline-staff-texts", "staff texts", log, journal, clock)
        self._gateway = gateway
        self._token = token
        self._mode = mode
        self._book = book
        self._conversations = conversations
        self._status_url = status_url
        # Which claims are this sender's: a lease another controller took over is not.
        self.holder = secrets.token_hex(8)
        self._client: SmsGatewayClient | None = None
        # Told of each try that the gateway took (True) or could not be reached for (False,
        # why): what the status page says of staff texting.
        self.on_result: Callable[[bool, str], None] = lambda ok, why: None

    def start(self) -> None:
        if self._gateway is not None:
            super().start()

    async def close(self) -> None:
        await super().close()
        if self._client is not None:
            await self._client.close()

    async def round(self) -> float:
        if self._mode() is Mode.OUTAGE:
            closed = await asyncio.to_thread(self.journal.close_open_texts, self._clock(),
                                             OUTAGE_ENGAGED)
            if closed:
                log.warning("%d staff text(s) not sent: %s", closed, OUTAGE_ENGAGED)
            return MAX_NAP
        due = await self.claim_due(
            lambda now, until: self.journal.claim_due_texts(now, until, self.holder),
            LEASE_SECONDS)
        for i, text in enumerate(due):
            if self.stopping or self._mode() is Mode.OUTAGE:
                await asyncio.to_thread(self.journal.release_texts,
                                        [t.id for t in due[i:]], self.holder)
                break
            await self._try(text)
        later = await asyncio.to_thread(self.journal.next_text_at)
        return self.nap_until(later, self._clock(), MAX_NAP)

    async def _try(self, text: StaffText) -> None:
        decision = decide_text(self._book, self._conversations,
                               OutboundText(text.user, text.sender, text.recipient),
                               self._mode())
        if isinstance(decision, RefuseText):
            why = f"refused before it was sent ({decision.why.value}): {decision.detail}"
            closed = await asyncio.to_thread(
                self.journal.text_refused, text.id, self._clock(), self.holder, why,
                f"{decision.why.value}: {decision.detail} (text #{text.id}, decided again "
                "before it was sent)")
            if closed:
                log.warning("staff text #%d by %s to %s not sent: %s", text.id, text.user,
                            redact(text.recipient), why)
            return
        handed = await asyncio.to_thread(self.journal.text_handed, text.id, self._clock(),
                                         self.holder)
        if not handed:
            log.warning("staff text #%d: its claim lapsed before it was sent; not sending",
                        text.id)
            return
        client = self._gateway_client()
        if client is None:
            await self._failed(text, NO_TOKEN)
            return
        callback = self._status_url.replace("{id}", str(text.id)) if self._status_url else ""
        try:
            sid = await client.send(text.sender, text.recipient, text.body,
                                    status_callback=callback)
        except UnsendableSms as exc:
            await self._not_sent(text, exc.reason)
        except GatewayRefused as exc:
            await self._not_sent(text, str(exc))
        except GatewayProtocolError as exc:
            # The gateway said yes in a way we cannot read: it took it.
            log.warning("staff text #%d to %s sent, but %s", text.id, redact(text.recipient),
                        exc.reason)
            await asyncio.to_thread(self.journal.text_sent, text.id, self._clock(), "")
        except GatewayUnavailable as exc:
            if exc.maybe_sent:
                why = f"{exc.last}: the gateway may have sent it, so it is not sent again"
                await asyncio.to_thread(self.journal.text_in_doubt, text.id, why)
                self.on_result(False, why)
                log.error("staff text #%d to %s in doubt: %s", text.id,
                          redact(text.recipient), why)
            else:
                await self._failed(text, exc.last)
        else:
            await asyncio.to_thread(self.journal.text_sent, text.id, self._clock(), sid)
            self.on_result(True, "")
            log.info("staff text #%d from %s to %s sent (%s)", text.id, text.sender,
                     redact(text.recipient), sid)

    def _gateway_client(self) -> SmsGatewayClient | None:
        """The gateway's client, made when first needed: the token may come later."""
        assert self._gateway is not None  # the task runs only with one
        if self._client is None:
            token = self._token()
            if not token:
                return None
            self._client = SmsGatewayClient(
                self._gateway.url, self._gateway.account, token, attempts=1,
                insecure_cleartext=self._gateway.insecure_cleartext)
        return self._client

    async def _failed(self, text: StaffText, why: str) -> None:
        tries = text.tries + 1  # counted when it was handed over
        if self._clock() - text.at >= GIVE_UP_AFTER:
            await self._not_sent(text, f"still not sent after {GIVE_UP_AFTER} ({why})")
            return
        self.on_result(False, why)
        delay = BACKOFF.delay(tries)
        await asyncio.to_thread(self.journal.text_failed, text.id,
                                self._clock() + timedelta(seconds=delay), why)
        log.warning("staff text #%d to %s not sent (try %d: %s); next try in %.0f s",
                    text.id, redact(text.recipient), tries, why, delay)

    async def _not_sent(self, text: StaffText, why: str) -> None:
        await asyncio.to_thread(self.journal.text_not_sent, text.id, why)
        log.error("staff text #%d to %s not sent: %s", text.id, redact(text.recipient), why)
