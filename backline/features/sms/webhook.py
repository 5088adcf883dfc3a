"""``POST /sms/inbound``: the gateway's inbound-message webhook, and ``POST /sms/status``: its
status callbacks for the texts staff send; thin aiohttp shells, checked alike.

The order of the checks is the contract:

1. no ``X-Twilio-Signature`` header: 403, before the body is even read;
2. not ``application/x-www-form-urlencoded``: 415; more than :data:`MAX_FORM_BYTES`: 413;
   bytes that are not a form: 400 (there is nothing a signature could be checked over);
3. a signature that does not match the form posted to our *public* URL: 403;
4. a signed form without a usable MessageSid, From, To or Body: 400;
5. otherwise ``on_sms`` is awaited, and only when it has returned (the caller has written the
   attempt to the journal and sent or queued the auto-reply) do we answer 200 with empty TwiML.
   If ``on_sms`` raises, the answer is 500 and the gateway tries again later; the caller keys
   the attempt by :attr:`~backline.features.sms.twilio.InboundSms.journal_key`, so a retry after a
   crash between recording and answering records nothing twice.

Every refusal (2 to 4, and 1) awaits ``on_refused(reason, remote)`` so the caller can record
it; nothing else happens for it.  ``reason`` is one of the short phrases below and never holds
a number or a message text.

Twilio signs the URL *it* called.  Behind a reverse proxy that is not what aiohttp sees
(scheme, host, port and perhaps a path prefix differ), so the signed URL is rebuilt from the
configured ``public_url_base`` plus :data:`PATH` plus the query string as received.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import hdrs, web

from backline.core.e164 import redact
from backline.core.refusals import Refusal
from backline.features.seam import Context
from backline.features.sms.twilio import (
    EMPTY_TWIML,
    FORM_CONTENT_TYPE,
    SIGNATURE_HEADER,
    BadWebhook,
    InboundSms,
    MessageStatus,
    parse_form,
    parse_inbound,
    parse_status,
    verify,
)

log = logging.getLogger("backline.sms.webhook")

PATH = "/sms/inbound"
STATUS_PATH = "/sms/status"

MAX_FORM_BYTES = 64 * 1024
"""A 1600-character body percent-encodes to at most ~15 KB (4-byte UTF-8, three bytes per
escaped byte), plus ~2 KB of Twilio's other fields and up to ten media URLs: 64 KB is ample
for Twilio and small enough that an unauthenticated flood costs us little memory."""

OnSms = Callable[[InboundSms], Awaitable[None]]
OnRefused = Callable[[str, str], Awaitable[None]]

# The reasons handed to on_refused: short, fixed, safe to log and to store.
UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad signature"
NO_SIGNING_SECRET = "no signing secret configured"
NOT_A_FORM = "not a form"
TOO_LARGE = "too large"


def make_sms_routes(public_url_base: str, auth_token: Callable[[], str], on_sms: OnSms,
                    on_refused: OnRefused,
                    judge: Callable[[str, str], Refusal] | None = None,
                    ) -> list[web.RouteDef]:
    """The route serving ``POST /sms/inbound``; add it with ``app.add_routes(...)``.

    ``public_url_base`` is the scheme, host and any path prefix the gateway is configured to
    call, e.g. ``https://backline.maple.example`` (a trailing ``/`` is ignored).
    ``auth_token`` returns the signing secret (Twilio: the account's Auth Token); it is called
    per request so a rotated secret takes effect without a restart, and an empty one refuses
    everything.  ``on_sms`` and ``on_refused`` are described in the module docstring.
    """
    inbound = _InboundSms(public_url_base.rstrip("/") + PATH, auth_token, on_refused, judge,
                          on_sms)
    return [web.post(PATH, inbound.handle)]


OnStatus = Callable[[MessageStatus, str], Awaitable[None]]


def make_status_routes(public_url_base: str, auth_token: Callable[[], str],
                       on_status: OnStatus, on_refused: OnRefused,
                       judge: Callable[[str, str], Refusal] | None = None,
                       ) -> list[web.RouteDef]:
    """The route serving ``POST /sms/status`` (:data:`STATUS_PATH`): the gateway's status
    callbacks for messages we sent, checked in the same order as an inbound SMS (steps 1 to
    4 above, with :func:`~backline.features.sms.twilio.parse_status`), then
    ``on_status(status, query)`` is awaited (``query``: the callback URL's query string, as
    signed) before the 200."""
    status = _StatusCallback(public_url_base.rstrip("/") + STATUS_PATH, auth_token,
                             on_refused, judge, on_status)
    return [web.post(STATUS_PATH, status.handle)]


class _SignedWebhook:
    """A form the gateway posts and signs; :meth:`taken` is what a signed one does."""

    def __init__(self, public_url: str, auth_token: Callable[[], str], on_refused: OnRefused,
                 judge: Callable[[str, str], Refusal] | None) -> None:
        self._public_url = public_url
        self._auth_token = auth_token
        self._on_refused = on_refused
        self._judge = judge

    async def handle(self, request: web.Request) -> web.Response:
        remote = request.remote or ""
        header = request.headers.get(SIGNATURE_HEADER, "")
        if not header:
            return await self._refuse(403, UNSIGNED, remote)
        if request.content_type != FORM_CONTENT_TYPE:
            return await self._refuse(415, f"{NOT_A_FORM}: wrong content type", remote)
        body = await _read_bounded(request)
        if body is None:
            return await self._refuse(413, TOO_LARGE, remote)
        try:
            params = parse_form(body)
        except BadWebhook as exc:
            return await self._refuse(400, f"{NOT_A_FORM}: {exc.reason}", remote)
        token = self._auth_token()
        if not token:
            log.error("sms webhook: %s; refusing every inbound message", NO_SIGNING_SECRET)
            return await self._refuse(403, NO_SIGNING_SECRET, remote)
        if not verify(self._signed_url(request), params, header, token):
            return await self._refuse(403, BAD_SIGNATURE, remote)
        try:
            return await self.taken(params, request)
        except BadWebhook as exc:
            return await self._refuse(400, f"malformed: {exc}", remote)

    async def taken(self, params: tuple[tuple[str, str], ...],
                    request: web.Request) -> web.Response:
        raise NotImplementedError

    def _signed_url(self, request: web.Request) -> str:
        # raw_path keeps the query string percent-encoded as received, which is how Twilio
        # signed it; the path itself is ours (PATH under the public base), not the proxy's.
        _, question, query = request.raw_path.partition("?")
        return self._public_url + question + query

    async def _refuse(self, status: int, reason: str, remote: str) -> web.Response:
        # ``judge`` (backline.core.refusals): the first refusal of a source in a minute is
        # logged and recorded in full, the rest only counted; past the limit, 429 at once.
        verdict = self._judge(remote, "sms.refused") if self._judge else Refusal.FIRST
        if verdict is Refusal.LIMITED:
            return _plain(429)
        if verdict is Refusal.COUNTED:
            return _plain(status)
        log.warning("sms webhook: refused (%s, HTTP %d) from %s", reason, status, remote)
        try:
            await self._on_refused(reason, remote)
        except Exception:
            # The refusal stands whether or not it could be recorded.
            log.exception("sms webhook: recording a refusal failed")
        return _plain(status)


class _InboundSms(_SignedWebhook):
    def __init__(self, public_url: str, auth_token: Callable[[], str], on_refused: OnRefused,
                 judge: Callable[[str, str], Refusal] | None, on_sms: OnSms) -> None:
        super().__init__(public_url, auth_token, on_refused, judge)
        self._on_sms = on_sms

    async def taken(self, params: tuple[tuple[str, str], ...],
                    request: web.Request) -> web.Response:
        sms = parse_inbound(params)
        try:
            await self._on_sms(sms)
        except Exception:
            # Not 200: the gateway keeps the message and posts it again, and the journal key
            # makes that second delivery harmless if the first was in fact recorded.
            log.exception("sms webhook: recording %s failed; the gateway will retry",
                          sms.message_sid)
            return _plain(500)
        log.info("sms webhook: %s from %s to %s taken", sms.message_sid, redact(sms.sender),
                 redact(sms.recipient))
        return web.Response(text=EMPTY_TWIML, content_type="text/xml", charset="utf-8")


class _StatusCallback(_SignedWebhook):
    def __init__(self, public_url: str, auth_token: Callable[[], str], on_refused: OnRefused,
                 judge: Callable[[str, str], Refusal] | None, on_status: OnStatus) -> None:
        super().__init__(public_url, auth_token, on_refused, judge)
        self._on_status = on_status

    async def taken(self, params: tuple[tuple[str, str], ...],
                    request: web.Request) -> web.Response:
        status = parse_status(params)
        try:
            await self._on_status(status, request.raw_path.partition("?")[2])
        except Exception:
            log.exception("sms status: recording %s failed; the gateway will retry",
                          status.message_sid)
            return _plain(500)
        return _plain(200)


async def _read_bounded(request: web.Request) -> bytes | None:
    """The request body, or None once it is over :data:`MAX_FORM_BYTES` (stop reading)."""
    declared = request.content_length
    if declared is not None and declared > MAX_FORM_BYTES:
        return None
    body = bytearray()
    while True:
        chunk = await request.content.read(MAX_FORM_BYTES + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None


def _plain(status: int) -> web.Response:
    # A bare status line: nothing of the request (path, fields, exception) is echoed back.
    return web.Response(status=status, text=f"{status} {HTTPStatus(status).phrase}\n",
                        headers={hdrs.CACHE_CONTROL: "no-store"})


def signing_secret(context: Context, consequence: str) -> str:
    """The gateway's signing secret, which both webhooks check; ``consequence`` is what its
    absence means for the webhook asking, for the log.  An empty secret verifies nothing:
    every request to that webhook gets 403."""
    gateway = context.directory.connections.sms_gateway
    if gateway is None:
        return ""
    return context.secret(gateway.signing_secret, "connections.sms_gateway.signing_secret",
                          consequence)
