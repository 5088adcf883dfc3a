"""Outbound SMS through a gateway speaking Twilio's Messages API: a thin aiohttp shell.

The request, what counts as success and how errors read are in :mod:`backline.features.sms.twilio`;
this module adds the socket, the timeouts and the retry policy.

**Where it posts.** ``url`` is the API *base* (the config's ``sms_gateway.url``, which may be
pasted as the provider's full Messages URL: the config keeps its base and account): scheme,
host, port and optionally a path prefix, e.g. ``https://api.twilio.com`` or
``http://127.0.0.1:8081``.  The client appends ``/2010-04-01/Accounts/{account}/Messages.json``
and authenticates with HTTP basic auth ``account:token``.  Plain ``http`` is accepted only
to a loopback host: basic auth carries the token in the clear.

**Retries.** A connection that fails, times out or drops, and the answers 429 and 5xx are
retried with exponential backoff and jitter (a ``Retry-After`` in seconds is honoured up to
the cap), at most ``attempts`` tries in all; then :class:`GatewayUnavailable`.  Any other
non-2xx answer is final: :class:`GatewayRefused`, tried once, because Twilio has already said
the request itself is wrong (bad number, bad credentials, unregistered sender).

**Duplicates.** The Messages API takes no idempotency key.  A retry after a failed *connect*
or a 429/503 cannot duplicate a message; a retry after a dropped connection, a timeout or a
500/502/504 may, if the gateway had in fact accepted the first one.  We prefer a rare double
text to a lost auto-reply or alert; :attr:`GatewayUnavailable.maybe_sent` tells the caller
whether giving up may still have sent it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from urllib.parse import urlsplit

import aiohttp

from backline.core.addresses import is_loopback
from backline.core.e164 import redact
from backline.features.sms.twilio import (
    BadAnswer,
    messages_path,
    outbound_form,
    refusal_detail,
    sid_from_answer,
)

log = logging.getLogger("backline.sms.gateway")

DEFAULT_TIMEOUT = 10.0  # seconds for one request, connect to last byte
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF = 0.5  # the first retry waits about this long, doubling each time
DEFAULT_MAX_BACKOFF = 8.0

MAX_ANSWER_BYTES = 256 * 1024
"""A Message resource is about 1 KB of JSON; a bigger answer is not one, and reading it all
would let a misbehaving gateway fill our memory."""

# Answers that say the gateway did not act on the request: retrying cannot send twice.
_NOT_PROCESSED = frozenset({429, 503})


class GatewayError(Exception):
    """Something went wrong sending through the SMS gateway."""


class GatewayRefused(GatewayError):
    """The gateway refused the message for good (HTTP ``status``, Twilio error ``code``).

    ``detail`` is the gateway's own message.  It may quote the destination number (Twilio's
    21211 does), so it is kept out of ``str(exc)`` and out of our logs.
    """

    def __init__(self, status: int, detail: str, code: int | None = None) -> None:
        super().__init__(f"the SMS gateway refused the message: HTTP {status}"
                         + (f", error {code}" if code is not None else ""))
        self.status = status
        self.detail = detail
        self.code = code


class GatewayUnavailable(GatewayError):
    """Every one of ``attempts`` tries failed for a reason worth retrying; ``last`` says what
    the last one was.  ``maybe_sent``: a try failed after the request had left, so the gateway
    may have sent the message even so."""

    def __init__(self, attempts: int, last: str, maybe_sent: bool) -> None:
        super().__init__(f"the SMS gateway is unavailable after {attempts} tries ({last})")
        self.attempts = attempts
        self.last = last
        self.maybe_sent = maybe_sent


class GatewayProtocolError(GatewayError):
    """The gateway answered ``status`` (success) with something that is not a Message
    resource.  It may have sent the message, so this is not retried."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the SMS gateway answered HTTP {status} but {reason}")
        self.status = status
        self.reason = reason


class _AnswerTooLarge(Exception):
    pass


Sleep = Callable[[float], Awaitable[None]]


class SmsGatewayClient:
    """Sends SMS through one gateway account.  Use as ``async with`` or call :meth:`close`.

    ``sleep`` and ``rng`` are seams for tests (the backoff schedule without the waiting).
    """

    def __init__(self, url: str, account_sid: str, token: str, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 attempts: int = DEFAULT_ATTEMPTS, backoff: float = DEFAULT_BACKOFF,
                 max_backoff: float = DEFAULT_MAX_BACKOFF, sleep: Sleep = asyncio.sleep,
                 rng: random.Random | None = None, insecure_cleartext: bool = False) -> None:
        _check_base(url, insecure_cleartext)
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._endpoint = url.rstrip("/") + messages_path(account_sid)
        self._account_sid = account_sid
        if ":" in account_sid:
            raise ValueError("the account SID cannot hold ':' (HTTP basic auth, RFC 7617)")
        # Built by hand: aiohttp.BasicAuth is deprecated from 3.14 and its replacement is
        # missing before it; this is the whole of it.
        credentials = base64.b64encode(f"{account_sid}:{token}".encode()).decode("ascii")
        self._authorization = f"Basic {credentials}"
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        # Never the token: this object ends up in tracebacks and debug logs.
        return f"SmsGatewayClient({self._endpoint!r})"

    @property
    def endpoint(self) -> str:
        """The full Messages API URL this client posts to."""
        return self._endpoint

    async def __aenter__(self) -> SmsGatewayClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, sender: str, to: str, body: str, *, status_callback: str = "") -> str:
        """Send ``body`` from ``sender`` to ``to`` (both E.164); return the gateway's sid.
        ``status_callback``: where the gateway is to post the message's delivery status.

        Raises :class:`~backline.features.sms.twilio.UnsendableSms` before any traffic for a bad
        number or body, :class:`GatewayRefused`, :class:`GatewayUnavailable` or
        :class:`GatewayProtocolError` as described on each.
        """
        form = outbound_form(sender, to, body, status_callback)
        if self._session is None:
            # Created here, not in __init__: a ClientSession belongs to the running loop.
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        maybe_sent = False
        last = ""
        for attempt in range(1, self._attempts + 1):
            retry_after: str | None = None
            try:
                status, answer, retry_after = await self._post(self._session, form)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # The TCP connection never opened: the request cannot have been sent.
                last = f"cannot connect: {type(exc).__name__}"
            except (aiohttp.ClientError, TimeoutError, _AnswerTooLarge) as exc:
                # The request may have been read and acted on before the link failed.  aiohttp
                # closes a connection that failed mid-exchange rather than reusing it.
                maybe_sent = True
                last = f"{type(exc).__name__} after sending"
            else:
                if 200 <= status < 300:
                    try:
                        sid = sid_from_answer(answer)
                    except BadAnswer as exc:
                        raise GatewayProtocolError(status, exc.reason) from None
                    log.info("sms gateway: sent %s to %s", sid, redact(to))
                    return sid
                if status != 429 and status < 500:
                    code, detail = refusal_detail(answer)
                    log.warning("sms gateway: message to %s refused: HTTP %d, error %s",
                                redact(to), status, code)
                    raise GatewayRefused(status, detail, code)
                maybe_sent = maybe_sent or status not in _NOT_PROCESSED
                last = f"HTTP {status}"
            if attempt == self._attempts:
                break
            delay = self._delay(attempt, retry_after)
            log.warning("sms gateway: try %d/%d to %s failed (%s); retrying in %.2fs",
                        attempt, self._attempts, redact(to), last, delay)
            await self._sleep(delay)
        log.error("sms gateway: giving up on a message to %s after %d tries (%s)", redact(to),
                  self._attempts, last)
        raise GatewayUnavailable(self._attempts, last, maybe_sent)

    async def _post(self, session: aiohttp.ClientSession,
                    form: dict[str, str]) -> tuple[int, bytes, str | None]:
        # No redirects: following one would re-post the form and the credentials elsewhere.
        async with session.post(self._endpoint, data=form, allow_redirects=False,
                                headers={"Authorization": self._authorization}) as response:
            answer = bytearray()
            while chunk := await response.content.read(MAX_ANSWER_BYTES + 1 - len(answer)):
                answer += chunk
                if len(answer) > MAX_ANSWER_BYTES:
                    raise _AnswerTooLarge
            return response.status, bytes(answer), response.headers.get("Retry-After")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after.strip()), self._max_backoff)
        ceiling = min(self._backoff * 2 ** (attempt - 1), self._max_backoff)
        # Jitter, so that many controllers hit by one gateway outage do not retry in step.
        return self._rng.uniform(ceiling / 2, ceiling)


def _check_base(url: str, insecure_cleartext: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the SMS gateway URL must be http(s)://host[:port][/prefix], "
                         f"not {url!r}")
    if parts.query or parts.fragment:
        raise ValueError("the SMS gateway URL is a base: no query string or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not insecure_cleartext:
        raise ValueError("the SMS gateway URL must be https unless it is on this machine: "
                         "basic auth would carry the token in the clear")
