"""A local stand-in for Twilio, both ways, on 127.0.0.1 and a free port.

Outbound, it serves the Messages API (``POST /2010-04-01/Accounts/{sid}/Messages.json``):
basic auth checked, the form checked the way Twilio checks it (21211, 21602, 21617), each
accepted message recorded, a ``201`` JSON Message resource answered.  It can be told to fail
the next requests with a status, to drop the connection after reading the request, or to
hold a request until the harness stops (a timeout for the client).

Inbound, it posts webhooks to a URL the way Twilio does (and, for a message sent with a
``StatusCallback``, its status callbacks): the full parameter set Twilio sends
for an SMS, form-encoded, signed with ``X-Twilio-Signature``, and on request unsigned, signed
with the wrong token, signed for another URL, or altered after signing.

The signing is written here from Twilio's description, not imported from
``backline.features.sms.twilio``: a peer that shares the code under test would share its bugs.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from types import TracebackType
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "harness-auth-token-0123456789abcdef"

_E164 = re.compile(r"\+[1-9]\d{7,14}")
_MESSAGES = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json")


class Signing(enum.Enum):
    """How :meth:`TwilioGateway.deliver` signs a webhook."""

    TWILIO = "twilio"          # as Twilio signs it
    NONE = "none"              # no X-Twilio-Signature header at all
    WRONG_TOKEN = "wrong-token"  # a well-formed signature under another key: a forgery
    TAMPERED = "tampered"      # signed, then the Body changed in transit


@dataclass(frozen=True, slots=True)
class SentSms:
    """A message the Messages API accepted."""

    sid: str
    account_sid: str
    sender: str
    to: str
    body: str
    status_callback: str = ""  # where the sender asked for the message's status


@dataclass(frozen=True, slots=True)
class Delivered:
    """What the webhook endpoint answered."""

    status: int
    content_type: str
    text: str
    params: tuple[tuple[str, str], ...]  # what was posted (after any tampering)


def twilio_signature(url: str, params: Sequence[tuple[str, str]], token: str) -> str:
    """Twilio's scheme: URL, then each name+value sorted by name, HMAC-SHA1, base64."""
    data = url
    for name in sorted({name for name, _ in params}):
        for value in sorted(value for key, value in params if key == name):
            data += name + value
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def inbound_params(sender: str, to: str, body: str, *, message_sid: str | None = None,
                   account_sid: str = ACCOUNT_SID,
                   extra: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The form Twilio posts for an inbound SMS (the fields of a real US webhook)."""
    sid = message_sid or "SM" + secrets.token_hex(16)
    params = [
        ("ToCountry", "US"), ("ToState", "IL"), ("SmsMessageSid", sid), ("NumMedia", "0"),
        ("ToCity", "CHICAGO"), ("FromZip", "60601"), ("SmsSid", sid), ("FromState", "IL"),
        ("SmsStatus", "received"), ("FromCity", "CHICAGO"), ("Body", body),
        ("FromCountry", "US"), ("To", to), ("MessagingServiceSid", "MG" + "0" * 32),
        ("ToZip", "60601"), ("NumSegments", str(max(1, -(-len(body) // 153)))),
        ("MessageSid", sid), ("AccountSid", account_sid), ("From", sender),
        ("ApiVersion", "2010-04-01"),
    ]
    if extra:
        params = [(k, v) for k, v in params if k not in extra] + list(extra.items())
    return params


@dataclass
class _Faults:
    status: list[tuple[int, int | None]] = field(default_factory=list)  # (status, retry-after)
    drops: int = 0
    stalls: int = 0
    lost_answers: int = 0


class TwilioGateway:
    """Start with ``async with TwilioGateway() as gw:``; ``gw.base_url`` is the API base."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sent: list[SentSms] = []
        self.requests = 0  # Messages API requests that reached us, failed ones included
        self.account_reads = 0  # GETs of the Account resource
        self.account_status = "active"  # or "suspended", "closed"
        self._faults = _Faults()
        self._changed = asyncio.Condition()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.base_url = ""

    async def __aenter__(self) -> TwilioGateway:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._messages)
        app.router.add_get("/2010-04-01/Accounts/{account}.json", self._account)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        self._released.set()  # let stalled requests go, so shutdown does not wait on them
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- misbehaviour on demand ---------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503, *, retry_after: int | None = None,
                  ) -> None:
        """Answer the next ``count`` Messages API requests with ``status`` (Twilio's JSON)."""
        self._faults.status.extend([(status, retry_after)] * count)

    def drop_next(self, count: int) -> None:
        """Read the next ``count`` requests in full, then close the connection unanswered:
        the client cannot tell whether the message went out."""
        self._faults.drops += count

    def lose_answer_next(self, count: int) -> None:
        """Accept the next ``count`` messages (they count as sent), then close the
        connection before answering: the gateway took them, the client cannot know it."""
        self._faults.lost_answers += count

    def stall_next(self, count: int) -> None:
        """Hold the next ``count`` requests until :meth:`stop`: the client times out."""
        self._faults.stalls += count

    async def wait_for_requests(self, count: int, within: float = 30.0) -> None:
        """Wait until at least ``count`` Messages API requests have reached us (failed,
        dropped and stalled ones included); TimeoutError after ``within`` seconds."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.requests >= count)

    async def wait_for_sent(self, count: int, within: float = 30.0) -> list[SentSms]:
        """Wait until at least ``count`` messages have been accepted (TimeoutError after
        ``within`` seconds); return them all."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.sent) >= count)
            return list(self.sent)

    # --- the Messages API ---------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        async with self._changed:
            self.requests += 1
            self._changed.notify_all()
        is_form = request.content_type == "application/x-www-form-urlencoded"
        form = await request.post() if is_form else None
        if self._faults.drops:
            self._faults.drops -= 1
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never reaches the client: the connection is gone
        if self._faults.stalls:
            self._faults.stalls -= 1
            await self._released.wait()
            return _error(503, 20503, "Service Unavailable")
        if self._faults.status:
            status, retry_after = self._faults.status.pop(0)
            response = _error(status, status * 100, "injected failure")
            if retry_after is not None:
                response.headers["Retry-After"] = str(retry_after)
            return response
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(
            f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if not hmac.compare_digest(auth.encode(), expected.encode()):
            return _error(401, 20003, "Authenticate")
        if request.match_info["account"] != self.account_sid:
            return _error(404, 20404, "The requested resource was not found")
        if form is None:
            return _error(400, 21600, "Expected a form")  # not Twilio's wording; never seen
        to, sender, body, callback = (str(form.get(name, "")) for name in (
            "To", "From", "Body", "StatusCallback"))
        if not _E164.fullmatch(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not _E164.fullmatch(sender):
            return _error(400, 21212, f"The 'From' number {sender} is not a valid phone "
                          "number, shortcode, or alphanumeric sender ID.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 "
                          "character limit.")
        sid = "SM" + secrets.token_hex(16)
        async with self._changed:
            self.sent.append(SentSms(sid, self.account_sid, sender, to, body, callback))
            self._changed.notify_all()
        if self._faults.lost_answers:
            self._faults.lost_answers -= 1
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never reaches the client: the connection is gone
        now = formatdate(usegmt=True)
        return web.json_response(status=201, data={
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": body,
            "date_created": now, "date_sent": None, "date_updated": now,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": sender, "messaging_service_sid": None, "num_media": "0",
            "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid,
            "status": "queued", "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
            "to": to, "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        })

    # --- the Account resource (a read: what `backline doctor` tries the credentials with) ----

    async def _account(self, request: web.Request) -> web.StreamResponse:
        self.account_reads += 1
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(
            f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if not hmac.compare_digest(auth.encode(), expected.encode()):
            return _error(401, 20003, "Authenticate")
        if request.match_info["account"] != self.account_sid:
            return _error(404, 20404, "The requested resource was not found")
        return web.json_response(data={
            "sid": self.account_sid, "friendly_name": "Maple test account",
            "status": self.account_status, "type": "Full",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}.json"})

    # --- inbound webhooks ---------------------------------------------------------------------

    async def deliver(self, url: str, sender: str, to: str, body: str, *,
                      message_sid: str | None = None, signing: Signing = Signing.TWILIO,
                      signed_url: str | None = None, extra: Mapping[str, str] | None = None,
                      ) -> Delivered:
        """Post an inbound SMS webhook to ``url`` as Twilio would.

        ``signed_url`` is the URL Twilio was configured with (default ``url``); they differ
        behind a proxy, or when a test signs for another endpoint on purpose.
        """
        params = inbound_params(sender, to, body, message_sid=message_sid,
                                account_sid=self.account_sid, extra=extra)
        headers: dict[str, str] = {}
        key = self.auth_token if signing is not Signing.WRONG_TOKEN else "not-" + self.auth_token
        if signing is not Signing.NONE:
            headers["X-Twilio-Signature"] = twilio_signature(signed_url or url, params, key)
        if signing is Signing.TAMPERED:
            params = [(k, v + " (and more)" if k == "Body" else v) for k, v in params]
        return await self.post_raw(url, urlencode(params).encode(), headers, tuple(params))

    async def report_status(self, message: SentSms, status: str, *, error_code: str = "",
                            signing: Signing = Signing.TWILIO,
                            message_sid: str | None = None) -> Delivered:
        """Post the status callback Twilio posts for ``message`` (to the ``StatusCallback``
        it was sent with): ``status`` is Twilio's MessageStatus (queued, sent, delivered,
        undelivered, failed), ``error_code`` its ErrorCode; signed as :meth:`deliver` signs.
        ``message_sid`` stands in for the message's own (a message the sender lost track of
        still has the one the gateway gave it)."""
        assert message.status_callback, "the message was sent without a StatusCallback"
        sid = message_sid or message.sid
        params = [("SmsSid", sid), ("SmsStatus", status), ("MessageStatus", status),
                  ("To", message.to), ("MessageSid", sid), ("AccountSid", message.account_sid),
                  ("From", message.sender), ("ApiVersion", "2010-04-01")]
        if error_code:
            params.append(("ErrorCode", error_code))
        headers: dict[str, str] = {}
        key = self.auth_token if signing is not Signing.WRONG_TOKEN else "not-" + self.auth_token
        if signing is not Signing.NONE:
            headers["X-Twilio-Signature"] = twilio_signature(message.status_callback, params,
                                                             key)
        if signing is Signing.TAMPERED:
            forged = "failed" if status != "failed" else "delivered"
            params = [(k, forged if k == "MessageStatus" else v) for k, v in params]
        return await self.post_raw(message.status_callback, urlencode(params).encode(),
                                   headers, tuple(params))

    async def post_raw(self, url: str, body: bytes, headers: Mapping[str, str] | None = None,
                       params: tuple[tuple[str, str], ...] = (),
                       content_type: str = "application/x-www-form-urlencoded") -> Delivered:
        """Post ``body`` as it is, with Twilio's headers plus ``headers``: for malformed forms."""
        assert self._http is not None, "start the harness first"
        sent = {"Content-Type": content_type, "User-Agent": "TwilioProxy/1.1",
                "I-Twilio-Idempotency-Token": secrets.token_hex(16), **(headers or {})}
        async with self._http.post(url, data=body, headers=sent) as response:
            return Delivered(response.status, response.content_type, await response.text(),
                             params)


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(status=status, data={
        "code": code, "message": message, "status": status,
        "more_info": f"https://www.twilio.com/docs/errors/{code}"})
