"""Twilio's SMS wire format, pure: signatures, the inbound webhook form, the Messages API.

Nothing here opens a socket, reads the clock or logs; the aiohttp shells in
:mod:`backline.features.sms.webhook` and :mod:`backline.features.sms.gateway` do that.

**X-Twilio-Signature** (twilio.com/docs/usage/webhooks/webhooks-security, and the reference
``twilio.request_validator.RequestValidator`` in twilio-python): take the full URL Twilio
requested, query string included, exactly as configured in Twilio; append every POST
parameter sorted by name (several values of one name sorted among themselves), each as name
then value with no separator; HMAC-SHA1 that UTF-8 string keyed with the account's Auth
Token; base64.  Parameters are the *decoded* form values, blank ones included.

**Inbound webhook**: Twilio POSTs ``application/x-www-form-urlencoded`` with, among others,
``MessageSid`` (``SM``/``MM`` + 32 hex digits), ``AccountSid``, ``From``, ``To``, ``Body`` (at
most 1600 characters) and ``NumMedia``.  Twilio adds parameters without notice, so unknown
ones are accepted (and signed over), never rejected.

**Messages API**: ``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`` with the
form fields ``To``, ``From``, ``Body`` and HTTP basic auth ``AccountSid:AuthToken``; Twilio
answers ``201`` with a JSON Message resource whose ``sid`` names the message, and errors as
JSON ``{"code", "message", "more_info", "status"}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from backline.core.addresses import is_loopback
from backline.core.e164 import NotE164, is_e164, normalise

Params = Mapping[str, str] | Iterable[tuple[str, str]]
"""Form parameters: a plain mapping, or name/value pairs when a name may repeat."""

SIGNATURE_HEADER = "X-Twilio-Signature"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

MAX_BODY_CHARS = 1600
"""Twilio's own limit on a message body, inbound (reassembled) and outbound."""

MAX_FORM_FIELDS = 200
"""An inbound SMS carries about twenty fields (forty with ten MMS media URLs); a form with
hundreds is not Twilio, and parsing it would only cost us."""

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?>\n<Response/>\n'
"""The answer to an inbound webhook: taken, and Twilio is to send nothing back itself (the
auto-reply, when there is one, goes out through the Messages API after it is recorded)."""

API_VERSION = "2010-04-01"

_MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-fA-F]{32}")
_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_ANSWER_SID = re.compile(r"[A-Za-z0-9]{1,64}")
_DEFAULT_PORTS = {"https": 443, "http": 80}
_MAX_DETAIL = 300


class BadWebhook(ValueError):
    """An inbound webhook we cannot take: ``field`` names the form field, ``reason`` says what
    was wrong.  Neither ever holds the field's value: it may be a patient's number or text."""

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class UnsendableSms(ValueError):
    """An outbound message refused before it leaves: ``reason`` says why (no value quoted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadAnswer(ValueError):
    """The gateway answered success with something that is not a Twilio Message resource."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InboundSms:
    """One inbound message, checked.  ``sender`` and ``recipient`` are canonical E.164."""

    message_sid: str
    sender: str
    recipient: str
    body: str
    account_sid: str = ""
    num_media: int = 0  # MMS attachments Twilio holds; we record that they existed, not them
    sender_raw: str = ""  # ``From`` as the gateway sent it, when that was not E.164 already

    @property
    def journal_key(self) -> str:
        """The attempt's idempotency key: Twilio re-posts the same MessageSid when it retries,
        so recording under this key twice records the message once."""
        return f"sms:{self.message_sid}"


def _as_e164(number: str) -> str | None:
    """``number`` in E.164, if it is E.164 already or North American bare digits (10, or 11
    starting with 1: gateways that drop the ``+`` send these); None for anything else."""
    if _canonical(number):
        return number
    if number.isascii() and number.isdigit() and len(number) in (10, 11):
        try:
            return normalise(number)
        except NotE164:
            return None
    return None


def _canonical(number: str) -> bool:
    # E.164 as the directory spells it: for +1 that includes the North American plan, so a
    # digit short or an area code starting with 0 or 1 is not taken for a number.
    try:
        return is_e164(number) and normalise(number) == number
    except NotE164:
        return False


# --- signatures -------------------------------------------------------------------------------

def _pairs(params: Params) -> list[tuple[str, str]]:
    if isinstance(params, Mapping):
        return list(params.items())
    return list(params)


def signature(url: str, params: Params, auth_token: str) -> str:
    """The X-Twilio-Signature Twilio sends for a POST of ``params`` to ``url``."""
    # Sorting the (name, value) pairs sorts by name, then values of one name among
    # themselves: what twilio-python does for a multi-valued form.
    data = url + "".join(name + value for name, value in sorted(_pairs(params)))
    mac = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> tuple[str, ...]:
    """``url`` as given, without its port, and with the scheme's default port made explicit.

    Twilio's own validators accept all three because which one Twilio signed has varied
    (twilio-python: "sig generation on back end is inconsistent").  The port is not a secret,
    so accepting both spellings costs nothing.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return (url,)
    if ":" in host:
        host = f"[{host}]"
    userinfo, at, _ = parts.netloc.rpartition("@")
    prefix = userinfo + at
    try:
        port = parts.port
    except ValueError:
        return (url,)
    variants = [url, urlunsplit(parts._replace(netloc=prefix + host))]
    default = _DEFAULT_PORTS.get(parts.scheme)
    if port is None and default is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    return tuple(dict.fromkeys(variants))


def verify(url: str, params: Params, header_value: str | None, auth_token: str) -> bool:
    """True when ``header_value`` is Twilio's signature of ``params`` posted to ``url``.

    A missing or empty header, or an empty token, is never valid: an HMAC keyed with an empty
    secret is one anybody can compute.  Comparison is constant-time per candidate URL.
    """
    if not header_value or not auth_token:
        return False
    given = header_value.strip().encode("utf-8")
    pairs = _pairs(params)
    matched = False
    for candidate in url_variants(url):
        expected = signature(candidate, pairs, auth_token).encode("ascii")
        # No early exit: every candidate is compared, so timing says nothing about which.
        matched |= hmac.compare_digest(expected, given)
    return matched


# --- the inbound webhook ----------------------------------------------------------------------

def parse_form(body: bytes) -> tuple[tuple[str, str], ...]:
    """Decode an ``application/x-www-form-urlencoded`` body into (name, value) pairs, in order.

    Blank values are kept: Twilio signs over them (an MMS with no text has ``Body=``).  Raises
    :class:`BadWebhook` for bytes that are not UTF-8, empty fields (``a=1&&b=2``), a field
    without ``=``, or more than :data:`MAX_FORM_FIELDS` fields.
    """
    try:
        text = body.decode("utf-8")
        return tuple(parse_qsl(text, keep_blank_values=True, strict_parsing=True,
                               encoding="utf-8", errors="strict",
                               max_num_fields=MAX_FORM_FIELDS))
    except UnicodeDecodeError:
        raise BadWebhook("the form is not UTF-8") from None
    except ValueError as exc:
        # parse_qsl's messages quote the offending field, which may be a patient's text.
        reason = ("too many form fields" if "Max number of fields" in str(exc)
                  else "not an application/x-www-form-urlencoded body")
        raise BadWebhook(reason) from None


def _optional(pairs: list[tuple[str, str]], name: str) -> str | None:
    values = [value for key, value in pairs if key == name]
    if len(values) > 1:
        # Which one would the rest of the system believe?  Refuse rather than pick.
        raise BadWebhook("given more than once", name)
    return values[0] if values else None


def _required(pairs: list[tuple[str, str]], name: str) -> str:
    value = _optional(pairs, name)
    if value is None:
        raise BadWebhook("missing", name)
    return value


def parse_inbound(params: Params) -> InboundSms:
    """The inbound message in a (signature-checked) webhook form, or :class:`BadWebhook`.

    Required: ``MessageSid`` (Twilio's ``SM``/``MM`` + 32 hex digits), ``From`` and ``To`` in
    E.164 (or North American bare digits, made E.164; ``From`` as sent is kept), ``Body``
    (may be empty: a picture alone) of at most :data:`MAX_BODY_CHARS`.
    ``AccountSid`` and ``NumMedia`` are checked when present.  Short-code and alphanumeric
    senders are refused: the practice could not answer them anyway.
    """
    pairs = _pairs(params)
    sid = _required(pairs, "MessageSid")
    if not _MESSAGE_SID.fullmatch(sid):
        raise BadWebhook("expected SM or MM and 32 hex digits", "MessageSid")
    numbers: list[str] = []
    for name in ("From", "To"):
        number = _as_e164(_required(pairs, name))
        if number is None:
            raise BadWebhook("expected an E.164 number like +13125550100", name)
        numbers.append(number)
    given = _required(pairs, "From")
    body = _required(pairs, "Body")
    if len(body) > MAX_BODY_CHARS:
        raise BadWebhook(f"longer than {MAX_BODY_CHARS} characters", "Body")
    account = _optional(pairs, "AccountSid") or ""
    if account and not _ACCOUNT_SID.fullmatch(account):
        raise BadWebhook("expected AC and 32 hex digits", "AccountSid")
    media = _optional(pairs, "NumMedia") or "0"
    if not (media.isascii() and media.isdigit() and len(media) <= 3):
        raise BadWebhook("expected a small whole number", "NumMedia")
    return InboundSms(sid, numbers[0], numbers[1], body, account, int(media),
                      given if given != numbers[0] else "")


@dataclass(frozen=True, slots=True)
class MessageStatus:
    """A status callback: the gateway's ``status`` of the message ``message_sid`` it took
    (Twilio's ``MessageStatus``), and its ``ErrorCode`` ("" when none)."""

    message_sid: str
    status: str
    error_code: str = ""


def parse_status(params: Params) -> MessageStatus:
    """The status in a (signature-checked) status callback form, or :class:`BadWebhook`:
    ``MessageSid`` as the Messages API answers it, ``MessageStatus`` one word (which ones
    count is the caller's), ``ErrorCode`` digits when present."""
    pairs = _pairs(params)
    sid = _required(pairs, "MessageSid")
    if not _ANSWER_SID.fullmatch(sid):
        raise BadWebhook("expected a message sid", "MessageSid")
    status = _required(pairs, "MessageStatus")
    if not (status.isascii() and status.isalpha() and len(status) <= 20):
        raise BadWebhook("expected a status word", "MessageStatus")
    code = _optional(pairs, "ErrorCode") or ""
    if code and not (code.isascii() and code.isdigit() and len(code) <= 8):
        raise BadWebhook("expected a number", "ErrorCode")
    return MessageStatus(sid, status.lower(), code)


# --- the Messages API -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ApiUrl:
    """Where the Messages API lives: ``base`` (scheme, host, port, any path prefix; the
    client appends :func:`messages_path`) and the account the URL names ("" if none)."""

    base: str
    account: str


# A path ending in the API version, optionally followed by the account and its Messages
# resource: what a user copies from the provider's console or documentation.
_API_PATH = re.compile(r"(?P<prefix>.*?)/" + re.escape("2010-04-01")
                       + r"(?:/Accounts(?:/(?P<account>[^/]+?)(?:\.json)?"
                       r"(?:/Messages(?:\.json)?)?)?)?/?")


def api_url(url: str, *, insecure_cleartext: bool = False) -> ApiUrl:
    """The API base and account in ``url``, as a user would paste it: the base alone
    (``https://api.twilio.com``), or the full Messages URL
    (``https://api.twilio.com/2010-04-01/Accounts/AC…/Messages.json``, with or without
    ``.json``), or a part of it.  Raises ValueError saying what is wrong (never the URL's
    text: it is the user's to read in their own file): not http(s), no host, a query string
    or fragment, plain http to anything but this machine (basic auth would carry the token
    in the clear) unless ``insecure_cleartext`` (the config's loudly named opt-out)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("the provider's API URL without a query string or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not insecure_cleartext:
        raise ValueError("an https:// URL (plain http only to this machine: basic auth would "
                         "carry the token in the clear)")
    match = _API_PATH.fullmatch(parts.path)
    prefix = match["prefix"] if match else parts.path.rstrip("/")
    account = unquote(match["account"]) if match and match["account"] else ""
    if ":" in account:
        raise ValueError("an account id without ':' (it is the basic-auth user)")
    return ApiUrl(urlunsplit((parts.scheme, parts.netloc, prefix, "", "")), account)



def messages_path(account_sid: str) -> str:
    """The Messages API path under the gateway's base URL (Twilio: https://api.twilio.com)."""
    if not account_sid:
        raise UnsendableSms("no account SID (the basic-auth user) configured")
    return f"/{API_VERSION}/Accounts/{quote(account_sid, safe='')}/Messages.json"


def account_path(account_sid: str) -> str:
    """The Account resource's path (Twilio's ``GET`` of it reads, sends nothing): what
    `backline doctor` tries the credentials with."""
    if not account_sid:
        raise UnsendableSms("no account SID (the basic-auth user) configured")
    return f"/{API_VERSION}/Accounts/{quote(account_sid, safe='')}.json"


def outbound_form(sender: str, to: str, body: str, status_callback: str = ""
                  ) -> dict[str, str]:
    """The Messages API form that sends ``body`` from ``sender`` to ``to`` (and has the
    gateway post the message's status to ``status_callback``, when given).

    Raises :class:`UnsendableSms` for a number that is not E.164 or an empty or over-long
    body: Twilio would refuse them (21211, 21602, 21617) and retrying cannot help.
    """
    if not _canonical(sender):
        raise UnsendableSms("the sender is not an E.164 number")
    if not _canonical(to):
        raise UnsendableSms("the destination is not an E.164 number")
    if not body.strip():
        raise UnsendableSms("the message is empty")
    if len(body) > MAX_BODY_CHARS:
        raise UnsendableSms(f"the message is longer than {MAX_BODY_CHARS} characters")
    form = {"To": to, "From": sender, "Body": body}
    if status_callback:
        form["StatusCallback"] = status_callback
    return form


def sid_from_answer(payload: bytes) -> str:
    """The ``sid`` of the Message resource in a success answer, or :class:`BadAnswer`."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise BadAnswer("the answer is not JSON") from None
    sid = document.get("sid") if isinstance(document, dict) else None
    if not isinstance(sid, str) or not _ANSWER_SID.fullmatch(sid):
        raise BadAnswer("the answer has no message sid")
    return sid


def refusal_detail(payload: bytes) -> tuple[int | None, str]:
    """Twilio's error ``code`` and ``message`` from an error answer, as far as there are any.

    The message may quote the number it refused (21211 does), so callers keep it out of logs.
    """
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None, payload[:_MAX_DETAIL].decode("utf-8", "replace")
    if not isinstance(document, dict):
        return None, ""
    code = document.get("code")
    message = document.get("message")
    return (code if isinstance(code, int) and not isinstance(code, bool) else None,
            message[:_MAX_DETAIL] if isinstance(message, str) else "")
