"""The texting API the inbox calls, on the status listener behind its bearer token (as the
conversation API is), and the gateway's status callbacks for what it sent.

``POST /texts/send`` with a JSON object: ``key`` (the caller's idempotency key: a request
sent again under it sends nothing more and answers what became of the first), ``user`` (who
is texting: trusted as named, since the token proves only that the caller is the inbox, which
authenticates its own staff; the token-holder and address are audited and logged beside it),
``number`` (the practice number to text from), ``to`` (the party) and ``text``.
Answers:

- 202 and the text's state (``pending``): journaled, to be sent by the sender task;
- 200 and its state now, ``duplicate: true``: the key was used for this very text already;
- 409: the key was used for another text; 400/413/422: a request that is not one;
- 403 ``{"refused", "why"}``: :func:`backline.core.texting.decide_text` refused it (audited);
- 503 ``{"refused"}``: no SMS gateway is configured.

``POST /texts/show`` with ``{"key"}``: the text's state now (404 if none).  No answer and no
log line echoes the text; bodies, never URLs, carry numbers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from backline.core import e164
from backline.core.conversations import ConversationBook
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.texting import is_delivery_status
from backline.features.json_requests import json_object, refusal
from backline.features.sms.twilio import MessageStatus
from backline.features.texting.requests import NotKept, TextRequest, request_text
from backline.journal import Journal
from backline.journal.texts import StaffText

log = logging.getLogger("backline.texting")

MAX_REQUEST = 32 * 1024
"""A 1600-character text JSON-escaped (up to 12 bytes a character, surrogate pairs) and the
few other fields fit; anything bigger is not a request."""
FIELDS = ("key", "user", "number", "to", "text")  # TextRequest's, in its order


class TextingApi:
    """The handlers; ``wake`` tells the sender a text is due (``backline.features.texting
    .sender``); ``gateway`` says whether one is configured."""

    def __init__(self, journal: Journal, book: OwnershipBook, conversations: ConversationBook,
                 clock: Callable[[], datetime], mode: Callable[[], Mode],
                 wake: Callable[[], None], gateway: bool) -> None:
        self.journal = journal
        self.book = book
        self.conversations = conversations
        self.clock = clock
        self.mode = mode
        self.wake = wake
        self.gateway = gateway

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/texts/send", self.send), web.post("/texts/show", self.show)]

    async def send(self, request: web.Request) -> web.Response:
        body = await _body(request)
        fields = {k: body.get(k) for k in FIELDS}
        missing = [k for k, value in fields.items() if not isinstance(value, str) or not value]
        if missing:
            return refusal(400, f"expected strings for {', '.join(missing)}")
        key, user, number, to, text = (str(fields[k]) for k in FIELDS)
        asked = TextRequest(key, user, number, to, text, _token_holder(request))
        outcome = await asyncio.to_thread(
            request_text, self.journal, self.book, self.conversations, self.mode(), asked,
            self.clock(), gateway=self.gateway)
        if isinstance(outcome, NotKept):
            if outcome.code:
                log.warning("staff text by %s refused: %s (via %s)", asked.user[:80],
                            outcome.why, asked.via)
                return web.json_response({"refused": outcome.why, "why": outcome.code},
                                         status=outcome.status)
            return refusal(outcome.status, outcome.why)
        if outcome.duplicate:
            return web.json_response(_shown(outcome.text) | {"duplicate": True})
        kept = outcome.text
        log.info("staff text #%d by %s from %s to %s: to be sent (via %s)", kept.id,
                 kept.user, kept.sender, e164.redact(kept.recipient), asked.via)
        self.wake()
        return web.json_response(_shown(kept), status=202)

    async def show(self, request: web.Request) -> web.Response:
        key = (await _body(request)).get("key")
        if not isinstance(key, str) or not key:
            return refusal(400, "expected a string for key")
        known = await asyncio.to_thread(self.journal.text_by_key, key)
        if known is None:
            return refusal(404, "no text was sent under that key")
        return web.json_response(_shown(known))

    # -- the gateway's status callbacks (signed: backline.features.sms.webhook) -------------

    async def status(self, status: MessageStatus, query: str) -> None:
        """Record what the gateway says of a text it took.  ``query`` is the callback URL's
        (signed, so ours): it names the text, which matters when the gateway's answer to
        the send never reached us."""
        if not is_delivery_status(status.status):
            log.info("sms status: %s for %s ignored (not a delivery status)", status.status,
                     status.message_sid)
            return
        ids = parse_qs(query).get("text", [])
        text_id = int(ids[0]) if len(ids) == 1 and ids[0].isdigit() else None
        text = await asyncio.to_thread(self.journal.text_status, text_id,
                                       status.message_sid, status.status, status.error_code,
                                       self.clock())
        if text is None:
            log.info("sms status: %s for %s, none of ours", status.status, status.message_sid)
        else:
            log.info("staff text #%d: the gateway says %s%s", text.id, status.status,
                     f" (error {status.error_code})" if status.error_code else "")


def _token_holder(request: web.Request) -> str:
    """Who sent ``request``: the holder of the status listener's one bearer token (checked
    before any handler runs), from this address."""
    return f"api: the connections.status token, from {(request.remote or 'unknown')[:64]}"


def _shown(text: StaffText) -> dict[str, Any]:
    """A text's state for the caller: never the text or the party's number."""
    return {"key": text.key, "id": text.id, "user": text.user, "number": text.sender,
            "state": text.state.value, "detail": text.detail, "tries": text.tries,
            "message_sid": text.message_sid, "delivery": text.delivery,
            "error_code": text.error_code}


async def _body(request: web.Request) -> dict[str, Any]:
    return await json_object(request, MAX_REQUEST)
