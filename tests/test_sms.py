"""SMS in Twilio's format: signatures against Twilio's published vectors, the form parsed from
bytes, the webhook on a real aiohttp server fed by a Twilio stand-in, and the Messages API
client against that stand-in failing on demand."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from backline.features.sms import webhook
from backline.features.sms.gateway import (
    GatewayProtocolError,
    GatewayRefused,
    GatewayUnavailable,
    SmsGatewayClient,
)
from backline.features.sms.twilio import (
    EMPTY_TWIML,
    MAX_BODY_CHARS,
    MAX_FORM_FIELDS,
    BadAnswer,
    BadWebhook,
    InboundSms,
    UnsendableSms,
    messages_path,
    outbound_form,
    parse_form,
    parse_inbound,
    refusal_detail,
    sid_from_answer,
    signature,
    url_variants,
    verify,
)
from tests.harness.sms_gateway import (
    AUTH_TOKEN,
    Signing,
    TwilioGateway,
    inbound_params,
    twilio_signature,
)

PATIENT = "+13125550177"
PRACTICE_NUMBER = "+13125550100"
PUBLIC_BASE = "https://backline.maple.example/hooks"  # what Twilio calls, through a proxy
SID = "SM" + "0123456789abcdef" * 2
SECRET_TEXT = "my chest hurts since Tuesday, call me back 4471"

# --- Twilio's published example -------------------------------------------------------------
# twilio/twilio-python tests/unit/test_request_validator.py (the example of Twilio's
# "Secure webhooks" page): token 12345, this URL and these parameters.
TWILIO_TOKEN = "12345"
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
                 "To": "+18005551212", "Caller": "+14158675309"}


def test_signature_of_twilios_documented_example() -> None:
    assert signature(TWILIO_URL, TWILIO_PARAMS, TWILIO_TOKEN) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert verify(TWILIO_URL, TWILIO_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", TWILIO_TOKEN)


def test_signature_of_twilios_api_snippet() -> None:
    # TwilioDevEd/api-snippets security/signature_validation/signature_validation.5.x.php.
    params = dict(TWILIO_PARAMS, From="+14158675310", Caller="+14158675310")
    assert signature(TWILIO_URL, params, TWILIO_TOKEN) == "GvWf1cFY/Q7PnoempGyD5oXAezc="


@pytest.mark.parametrize(("url", "header"), [
    # twilio-python: a port Twilio added or left out must not matter (their four cases).
    (TWILIO_URL.replace(".com", ".com:1234"), "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    (TWILIO_URL.replace(".com", ".com:1234").replace("https", "http"),
     "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    (TWILIO_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443
    (TWILIO_URL.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80
])
def test_verify_accepts_twilios_port_variants(url: str, header: str) -> None:
    assert verify(url, TWILIO_PARAMS, header, TWILIO_TOKEN)


@pytest.mark.parametrize(("url", "expected"), [
    ("https://a.example/x?q=1", ("https://a.example/x?q=1", "https://a.example:443/x?q=1")),
    ("http://127.0.0.1:8080/x", ("http://127.0.0.1:8080/x", "http://127.0.0.1/x")),
    ("https://[::1]:8443/x", ("https://[::1]:8443/x", "https://[::1]/x")),
    ("not a url", ("not a url",)),
])
def test_url_variants(url: str, expected: tuple[str, ...]) -> None:
    assert url_variants(url) == expected


def test_signature_sorts_names_then_repeated_values() -> None:
    pairs = [("b", "2"), ("a", "2"), ("a", "1"), ("B", "0")]
    data = "https://x.example/h" + "B0" + "a1" + "a2" + "b2"  # code-point order: B < a < b
    expected = base64.b64encode(
        hmac.new(b"tok", data.encode(), hashlib.sha1).digest()).decode()
    assert signature("https://x.example/h", pairs, "tok") == expected
    assert signature("https://x.example/h", list(reversed(pairs)), "tok") == expected
    # The harness signs with its own code, written from Twilio's description: they agree.
    assert twilio_signature("https://x.example/h", pairs, "tok") == expected


def test_blank_and_unicode_values_are_signed() -> None:
    with_blank = [("Body", ""), ("From", PATIENT)]
    assert signature("u", with_blank, "t") != signature("u", [("From", PATIENT)], "t")
    text = [("Body", "Ça va? 🙂")]
    assert verify("u", text, twilio_signature("u", text, "t"), "t")


GOOD = signature(TWILIO_URL, TWILIO_PARAMS, TWILIO_TOKEN)


@pytest.mark.parametrize(("url", "params", "header", "token"), [
    (TWILIO_URL, TWILIO_PARAMS, None, TWILIO_TOKEN),
    (TWILIO_URL, TWILIO_PARAMS, "", TWILIO_TOKEN),
    (TWILIO_URL, TWILIO_PARAMS, GOOD, ""),  # an empty key is everybody's key
    (TWILIO_URL, TWILIO_PARAMS, GOOD, "54321"),
    (TWILIO_URL, dict(TWILIO_PARAMS, Digits="1235"), GOOD, TWILIO_TOKEN),
    (TWILIO_URL, dict(TWILIO_PARAMS, Extra=""), GOOD, TWILIO_TOKEN),
    (TWILIO_URL + "&baz=3", TWILIO_PARAMS, GOOD, TWILIO_TOKEN),
    (TWILIO_URL.replace("myapp", "other"), TWILIO_PARAMS, GOOD, TWILIO_TOKEN),
    (TWILIO_URL, TWILIO_PARAMS, GOOD[:-1], TWILIO_TOKEN),
    (TWILIO_URL, TWILIO_PARAMS, "é" * 28, TWILIO_TOKEN),  # not ASCII: no exception either
])
def test_verify_refuses(url: str, params: dict[str, str], header: str | None,
                        token: str) -> None:
    assert not verify(url, params, header, token)


# --- the form, from bytes -------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    (b"", ()),
    (b"Body=hello+world%21&From=%2B13125550177",
     (("Body", "hello world!"), ("From", "+13125550177"))),
    (b"Body=", (("Body", ""),)),
    (b"Body=%C3%87a+va%3F+%F0%9F%99%82", (("Body", "Ça va? 🙂"),)),
    ("Body=Ça".encode(), (("Body", "Ça"),)),  # raw UTF-8, unescaped: still text
    (b"Body=a%3Db%26c", (("Body", "a=b&c"),)),
    (b"Body=1;2", (("Body", "1;2"),)),  # ';' is no separator (Python 3.10+, and Twilio)
    (b"a=1&a=2", (("a", "1"), ("a", "2"))),
    (b"Body=100%", (("Body", "100%"),)),  # a stray '%' stays, as every decoder keeps it
])
def test_parse_form(raw: bytes, expected: tuple[tuple[str, str], ...]) -> None:
    assert parse_form(raw) == expected


@pytest.mark.parametrize("raw", [
    b"\xff\xfe", b"Body=%FF", b"a=1&&b=2", b"Body", b"a=1&",
    b"&".join(b"f%d=x" % i for i in range(MAX_FORM_FIELDS + 1)),
])
def test_parse_form_refuses(raw: bytes) -> None:
    with pytest.raises(BadWebhook):
        parse_form(raw)


def test_parse_form_any_truncation_parses_or_is_refused() -> None:
    # The body as the network may cut it: every prefix either parses or is BadWebhook.
    raw = urlencode(inbound_params(PATIENT, PRACTICE_NUMBER, "Ça va? 🙂 a&b=c")).encode()
    for end in range(len(raw) + 1):
        with contextlib.suppress(BadWebhook):
            parse_form(raw[:end])


def test_parse_form_error_never_quotes_the_text() -> None:
    with pytest.raises(BadWebhook) as caught:
        parse_form(b"Body=" + SECRET_TEXT.encode() + b"&&x")
    assert SECRET_TEXT not in str(caught.value)


# --- the inbound message --------------------------------------------------------------------

def _form(**changes: str | None) -> list[tuple[str, str]]:
    params = dict(inbound_params(PATIENT, PRACTICE_NUMBER, SECRET_TEXT, message_sid=SID))
    for name, value in changes.items():
        if value is None:
            params.pop(name)
        else:
            params[name] = value
    return list(params.items())


def test_parse_inbound() -> None:
    sms = parse_inbound(_form())
    assert sms == InboundSms(SID, PATIENT, PRACTICE_NUMBER, SECRET_TEXT,
                             "AC" + "0123456789abcdef" * 2, 0)
    assert sms.journal_key == f"sms:{SID}"
    assert parse_inbound(_form(Body="", NumMedia="2")).num_media == 2
    assert parse_inbound(_form(Body="x" * MAX_BODY_CHARS)).body == "x" * MAX_BODY_CHARS
    assert parse_inbound(_form(AccountSid=None, NumMedia=None)).account_sid == ""


@pytest.mark.parametrize(("given", "number"), [
    ("17205550141", "+17205550141"),  # gateways that drop the '+' send 11 bare digits
    ("7205550141", "+17205550141"),   # or 10
])
def test_parse_inbound_makes_bare_north_american_digits_e164_and_keeps_them(
        given: str, number: str) -> None:
    sms = parse_inbound(_form(From=given, To=PRACTICE_NUMBER[1:]))
    assert (sms.sender, sms.sender_raw, sms.recipient) == (number, given, PRACTICE_NUMBER)
    assert parse_inbound(_form(From=number)).sender_raw == ""  # E.164 as sent: nothing more


@pytest.mark.parametrize(("changes", "field"), [
    ({"MessageSid": None}, "MessageSid"),
    ({"MessageSid": "SM123"}, "MessageSid"),
    ({"MessageSid": "CA" + "0" * 32}, "MessageSid"),
    ({"From": None}, "From"),
    ({"From": "22395"}, "From"),             # a short code
    ({"From": "MAPLECLINIC"}, "From"),       # an alphanumeric sender
    ({"From": "(312) 555-0177"}, "From"),    # Twilio sends E.164 only
    ({"To": "+1312555012"}, "To"),             # a digit short
    ({"From": "11235550177"}, "From"),       # 11 digits, no NANP area code after the 1
    ({"From": "1223555017"}, "From"),        # 10 digits, area code starting with 1
    ({"Body": None}, "Body"),
    ({"Body": "x" * (MAX_BODY_CHARS + 1)}, "Body"),
    ({"AccountSid": "ACnope"}, "AccountSid"),
    ({"NumMedia": "many"}, "NumMedia"),
    ({"NumMedia": "-1"}, "NumMedia"),
])
def test_parse_inbound_refuses(changes: dict[str, str | None], field: str) -> None:
    with pytest.raises(BadWebhook) as caught:
        parse_inbound(_form(**changes))
    assert caught.value.field == field
    for value in changes.values():
        if value:
            assert value not in str(caught.value)


def test_parse_inbound_refuses_a_field_given_twice() -> None:
    with pytest.raises(BadWebhook) as caught:
        parse_inbound([*_form(), ("From", "+13125550199")])
    assert caught.value.field == "From"


# --- the outbound form and answers ----------------------------------------------------------

def test_outbound_form() -> None:
    assert outbound_form(PRACTICE_NUMBER, PATIENT, "We are closed.") == {
        "To": PATIENT, "From": PRACTICE_NUMBER, "Body": "We are closed."}
    assert messages_path("AC1") == "/2010-04-01/Accounts/AC1/Messages.json"
    assert messages_path("a/b") == "/2010-04-01/Accounts/a%2Fb/Messages.json"


@pytest.mark.parametrize(("sender", "to", "body"), [
    ("3125550100", PATIENT, "x"), (PRACTICE_NUMBER, "911", "x"), (PRACTICE_NUMBER, PATIENT, ""),
    (PRACTICE_NUMBER, PATIENT, " \n"), (PRACTICE_NUMBER, PATIENT, "x" * (MAX_BODY_CHARS + 1)),
])
def test_outbound_form_refuses(sender: str, to: str, body: str) -> None:
    with pytest.raises(UnsendableSms):
        outbound_form(sender, to, body)


def test_answers() -> None:
    assert sid_from_answer(b'{"sid": "SMabc", "status": "queued"}') == "SMabc"
    for bad in (b"", b"<Response/>", b"[]", b'{"sid": 3}', b'{"sid": "a b"}', b"\xff"):
        with pytest.raises(BadAnswer):
            sid_from_answer(bad)
    assert refusal_detail(b'{"code": 21211, "message": "The \'To\' number ..."}') == (
        21211, "The 'To' number ...")
    assert refusal_detail(b"Bad Gateway") == (None, "Bad Gateway")
    assert refusal_detail(b'{"code": true}') == (None, "")


# --- the webhook on a real server -----------------------------------------------------------

@dataclass
class Practice:
    """The caller's side of the webhook: records what it is handed."""

    token: str = AUTH_TOKEN
    sms: list[InboundSms] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event | None = None
    failures: int = 0

    async def on_sms(self, sms: InboundSms) -> None:
        self.entered.set()
        if self.release is not None:
            await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("journal is locked")
        self.sms.append(sms)

    async def on_refused(self, reason: str, remote: str) -> None:
        self.refused.append((reason, remote))


@dataclass
class Site:
    twilio: TwilioGateway
    practice: Practice
    local_url: str   # where the harness posts (what aiohttp sees)
    public_url: str  # what Twilio was configured with and signs


@pytest.fixture()
async def twilio() -> AsyncIterator[TwilioGateway]:
    async with TwilioGateway() as gateway:
        yield gateway


@pytest.fixture()
async def site(twilio: TwilioGateway) -> AsyncIterator[Site]:
    practice = Practice()
    app = web.Application()
    app.add_routes(webhook.make_sms_routes(PUBLIC_BASE + "/", lambda: practice.token,
                                           practice.on_sms, practice.on_refused))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield Site(twilio, practice, f"http://{host}:{port}{webhook.PATH}",
                   PUBLIC_BASE + webhook.PATH)
    finally:
        await runner.cleanup()


async def test_good_sms_is_taken_and_answered_only_after_on_sms(site: Site) -> None:
    site.practice.release = asyncio.Event()
    delivery = asyncio.create_task(site.twilio.deliver(
        site.local_url, PATIENT, PRACTICE_NUMBER, SECRET_TEXT, message_sid=SID,
        signed_url=site.public_url))
    await site.practice.entered.wait()
    # on_sms has not returned: nothing may have been answered yet, whatever the loop does.
    for _ in range(20):
        await asyncio.sleep(0)
    assert not delivery.done()
    site.practice.release.set()
    answer = await delivery
    assert (answer.status, answer.content_type, answer.text) == (200, "text/xml", EMPTY_TWIML)
    assert site.practice.sms == [InboundSms(SID, PATIENT, PRACTICE_NUMBER, SECRET_TEXT,
                                            site.twilio.account_sid, 0)]
    assert site.practice.refused == []


async def test_on_sms_failing_is_500_and_twilios_retry_is_taken(site: Site) -> None:
    site.practice.failures = 1
    first = await site.twilio.deliver(site.local_url, PATIENT, PRACTICE_NUMBER, SECRET_TEXT,
                                      message_sid=SID, signed_url=site.public_url)
    assert first.status == 500 and SECRET_TEXT not in first.text
    again = await site.twilio.deliver(site.local_url, PATIENT, PRACTICE_NUMBER, SECRET_TEXT,
                                      message_sid=SID, signed_url=site.public_url)
    assert again.status == 200
    assert [sms.journal_key for sms in site.practice.sms] == [f"sms:{SID}"]


async def test_query_string_is_part_of_the_signed_url(site: Site) -> None:
    answer = await site.twilio.deliver(site.local_url + "?practice=maple%20st", PATIENT,
                                       PRACTICE_NUMBER, "hi",
                                       signed_url=site.public_url + "?practice=maple%20st")
    assert answer.status == 200


async def test_unsigned_is_403_and_recorded(site: Site) -> None:
    answer = await site.twilio.deliver(site.local_url, PATIENT, PRACTICE_NUMBER, SECRET_TEXT,
                                       signing=Signing.NONE, signed_url=site.public_url)
    assert answer.status == 403
    assert site.practice.refused == [(webhook.UNSIGNED, "127.0.0.1")]
    assert site.practice.sms == [] and not site.practice.entered.is_set()


@pytest.mark.parametrize("signing", [Signing.WRONG_TOKEN, Signing.TAMPERED])
async def test_forged_is_403_and_recorded(site: Site, signing: Signing) -> None:
    answer = await site.twilio.deliver(site.local_url, PATIENT, PRACTICE_NUMBER, SECRET_TEXT,
                                       signing=signing, signed_url=site.public_url)
    assert answer.status == 403
    assert site.practice.refused == [(webhook.BAD_SIGNATURE, "127.0.0.1")]
    assert site.practice.sms == []


async def test_signature_is_checked_against_the_public_url_not_the_local_one(
        site: Site) -> None:
    # Signed for the URL aiohttp sees: not the one Twilio calls, so not Twilio's signature.
    answer = await site.twilio.deliver(site.local_url, PATIENT, PRACTICE_NUMBER, "hi")
    assert answer.status == 403
    assert site.practice.refused == [(webhook.BAD_SIGNATURE, "127.0.0.1")]


async def test_no_signing_secret_refuses_everything(site: Site) -> None:
    site.practice.token = ""
    answer = await site.twilio.deliver(site.local_url, PATIENT, PRACTICE_NUMBER, "hi",
                                       signed_url=site.public_url)
    assert answer.status == 403
    assert site.practice.refused == [(webhook.NO_SIGNING_SECRET, "127.0.0.1")]


async def test_signed_but_malformed_is_400_and_recorded(site: Site) -> None:
    answer = await site.twilio.deliver(site.local_url, "22395", PRACTICE_NUMBER, SECRET_TEXT,
                                       signed_url=site.public_url)
    assert answer.status == 400
    [(reason, _)] = site.practice.refused
    assert reason.startswith("malformed: From") and "22395" not in reason
    assert site.practice.sms == []


@pytest.mark.parametrize(("raw", "content_type", "status"), [
    (b"Body=%FF&From=x", "application/x-www-form-urlencoded", 400),
    (b"Body=a&&From=x", "application/x-www-form-urlencoded", 400),
    (b'{"Body": "hi"}', "application/json", 415),
    (b"Body=" + b"x" * (webhook.MAX_FORM_BYTES + 1), "application/x-www-form-urlencoded", 413),
])
async def test_not_a_form_is_refused_and_recorded(site: Site, raw: bytes, content_type: str,
                                                   status: int) -> None:
    answer = await site.twilio.post_raw(site.local_url, raw, {"X-Twilio-Signature": GOOD},
                                        content_type=content_type)
    assert answer.status == status
    [(reason, _)] = site.practice.refused
    assert reason.startswith((webhook.NOT_A_FORM, webhook.TOO_LARGE))
    assert site.practice.sms == []


async def test_chunked_oversized_body_is_413(site: Site) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"Body="
        for _ in range(webhook.MAX_FORM_BYTES // 4096 + 2):
            yield b"x" * 4096

    async with aiohttp.ClientSession() as http, http.post(
            site.local_url, data=chunks(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "X-Twilio-Signature": GOOD}) as response:
        assert response.status == 413
    assert site.practice.refused == [(webhook.TOO_LARGE, "127.0.0.1")]


async def test_only_post_is_served(site: Site) -> None:
    async with aiohttp.ClientSession() as http, http.get(site.local_url) as response:
        assert response.status == 405


async def test_webhook_logs_neither_text_nor_numbers(site: Site,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    site.practice.failures = 1
    for signing in (Signing.TWILIO, Signing.TWILIO, Signing.TAMPERED, Signing.NONE):
        await site.twilio.deliver(site.local_url, PATIENT, PRACTICE_NUMBER, SECRET_TEXT,
                                  signing=signing, signed_url=site.public_url)
    await site.twilio.deliver(site.local_url, "+447700900123", PRACTICE_NUMBER, SECRET_TEXT,
                              extra={"NumMedia": "lots"}, signed_url=site.public_url)
    assert len(site.practice.sms) == 1 and len(site.practice.refused) == 3
    assert "taken" in caplog.text and "refused" in caplog.text
    for secret in (SECRET_TEXT, "chest", PATIENT, PATIENT[1:], "7700900123", PRACTICE_NUMBER):
        assert secret not in caplog.text


# --- the Messages API client against the stand-in -------------------------------------------

@dataclass
class Sleeps:
    """The client's backoff, recorded instead of waited out."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _client(twilio: TwilioGateway, sleeps: Sleeps, *, attempts: int = 4, backoff: float = 0.5,
            max_backoff: float = 8.0, timeout: float = 10.0) -> SmsGatewayClient:
    return SmsGatewayClient(twilio.base_url, twilio.account_sid, twilio.auth_token,
                            sleep=sleeps, attempts=attempts, backoff=backoff,
                            max_backoff=max_backoff, timeout=timeout)


async def test_client_sends_in_twilios_format(twilio: TwilioGateway) -> None:
    async with _client(twilio, Sleeps()) as client:
        assert client.endpoint == (f"{twilio.base_url}/2010-04-01/Accounts/"
                                   f"{twilio.account_sid}/Messages.json")
        sid = await client.send(PRACTICE_NUMBER, PATIENT, SECRET_TEXT)
    [sent] = await twilio.wait_for_sent(1)
    assert (sent.sid, sent.sender, sent.to, sent.body) == (sid, PRACTICE_NUMBER, PATIENT,
                                                           SECRET_TEXT)
    assert twilio.requests == 1


@pytest.mark.parametrize(("fault", "maybe_twice"), [
    (lambda gw: gw.fail_next(2, 503), False),
    (lambda gw: gw.fail_next(1, 500), True),
    (lambda gw: gw.fail_next(1, 429), False),
    (lambda gw: gw.drop_next(2), True),
])
async def test_client_retries_transient_failures(
        twilio: TwilioGateway, fault: Callable[[TwilioGateway], None],
        maybe_twice: bool) -> None:
    fault(twilio)
    sleeps = Sleeps()
    async with _client(twilio, sleeps, backoff=1.0, max_backoff=3.0) as client:
        sid = await client.send(PRACTICE_NUMBER, PATIENT, "We are closed.")
    assert [sent.sid for sent in twilio.sent] == [sid]
    assert twilio.requests == len(sleeps.delays) + 1
    # Exponential with jitter: try n waits between half and all of min(1.0 * 2**(n-1), 3.0).
    for attempt, delay in enumerate(sleeps.delays, start=1):
        ceiling = min(2.0 ** (attempt - 1), 3.0)
        assert ceiling / 2 <= delay <= ceiling


async def test_client_honours_retry_after_up_to_its_cap(twilio: TwilioGateway) -> None:
    twilio.fail_next(1, 429, retry_after=2)
    twilio.fail_next(1, 503, retry_after=3600)
    sleeps = Sleeps()
    async with _client(twilio, sleeps, max_backoff=30.0) as client:
        await client.send(PRACTICE_NUMBER, PATIENT, "hi")
    assert sleeps.delays == [2.0, 30.0]


async def test_client_times_out_a_stalled_request_and_retries(twilio: TwilioGateway) -> None:
    twilio.stall_next(1)
    # The stalled request is held until the gateway stops: only the timeout ends it.  5 s,
    # not 0.3: the same timeout bounds the retry, which a loaded machine must not miss.
    async with _client(twilio, Sleeps(), timeout=5.0) as client:
        await client.send(PRACTICE_NUMBER, PATIENT, "hi")
    assert twilio.requests == 2 and len(twilio.sent) == 1


@pytest.mark.parametrize(("status", "maybe_sent"), [(503, False), (502, True)])
async def test_client_gives_up_after_its_attempts(twilio: TwilioGateway, status: int,
                                                  maybe_sent: bool) -> None:
    twilio.fail_next(10, status)
    sleeps = Sleeps()
    async with _client(twilio, sleeps, attempts=3) as client:
        with pytest.raises(GatewayUnavailable) as caught:
            await client.send(PRACTICE_NUMBER, PATIENT, "hi")
    assert (caught.value.attempts, caught.value.last) == (3, f"HTTP {status}")
    assert caught.value.maybe_sent is maybe_sent
    assert twilio.requests == 3 and len(sleeps.delays) == 2 and twilio.sent == []


async def test_client_does_not_retry_a_refusal(twilio: TwilioGateway) -> None:
    twilio.fail_next(1, 400)
    sleeps = Sleeps()
    async with _client(twilio, sleeps) as client:
        with pytest.raises(GatewayRefused) as caught:
            await client.send(PRACTICE_NUMBER, PATIENT, "hi")
    assert (caught.value.status, caught.value.code) == (400, 40000)
    assert twilio.requests == 1 and sleeps.delays == []


async def test_client_with_wrong_credentials_is_refused_once(twilio: TwilioGateway) -> None:
    sleeps = Sleeps()
    async with SmsGatewayClient(twilio.base_url, twilio.account_sid, "wrong",
                                sleep=sleeps) as client:
        with pytest.raises(GatewayRefused) as caught:
            await client.send(PRACTICE_NUMBER, PATIENT, "hi")
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert twilio.requests == 1 and sleeps.delays == []


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_client_without_a_gateway_is_unavailable_and_surely_unsent() -> None:
    sleeps = Sleeps()
    async with SmsGatewayClient(f"http://127.0.0.1:{_closed_port()}", "AC1", "t",
                                sleep=sleeps, attempts=2) as client:
        with pytest.raises(GatewayUnavailable) as caught:
            await client.send(PRACTICE_NUMBER, PATIENT, "hi")
    assert caught.value.maybe_sent is False and caught.value.last.startswith("cannot connect")
    assert len(sleeps.delays) == 1


async def test_client_refuses_an_unsendable_message_before_any_traffic(
        twilio: TwilioGateway) -> None:
    async with _client(twilio, Sleeps()) as client:
        with pytest.raises(UnsendableSms):
            await client.send(PRACTICE_NUMBER, "911", "hi")
    assert twilio.requests == 0


async def test_client_treats_a_success_without_sid_as_a_protocol_error() -> None:
    async def not_twilio(request: web.Request) -> web.Response:
        return web.Response(status=201, text="<Response/>")

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/AC1/Messages.json", not_twilio)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        async with SmsGatewayClient(f"http://{host}:{port}", "AC1", "t") as client:
            with pytest.raises(GatewayProtocolError):
                await client.send(PRACTICE_NUMBER, PATIENT, "hi")
    finally:
        await runner.cleanup()


def test_client_configuration() -> None:
    client = SmsGatewayClient("https://api.twilio.com/", "AC1", "s3cret-token")
    assert client.endpoint == "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
    assert "s3cret" not in repr(client)
    for url in ("http://sms.example.net", "ftp://127.0.0.1", "http://127.0.0.1/?x=1", "/api"):
        with pytest.raises(ValueError):
            SmsGatewayClient(url, "AC1", "t")
    SmsGatewayClient("http://localhost:8081", "AC1", "t")
    SmsGatewayClient("http://[::1]:8081/prefix", "AC1", "t")
    refused = GatewayRefused(400, "The 'To' number +13125550177 is not valid", 21211)
    assert PATIENT not in str(refused) and "21211" in str(refused)


async def test_client_logs_neither_text_nor_numbers(twilio: TwilioGateway,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    twilio.fail_next(1, 503)
    twilio.drop_next(1)
    async with _client(twilio, Sleeps(), attempts=3) as client:
        await client.send(PRACTICE_NUMBER, PATIENT, SECRET_TEXT)
        twilio.fail_next(1, 400)
        with pytest.raises(GatewayRefused):
            await client.send(PRACTICE_NUMBER, PATIENT, SECRET_TEXT)
        twilio.fail_next(3, 502)
        with pytest.raises(GatewayUnavailable):
            await client.send(PRACTICE_NUMBER, PATIENT, SECRET_TEXT)
    assert "retrying" in caplog.text and "sent" in caplog.text
    for secret in (SECRET_TEXT, "chest", PATIENT, PATIENT[1:], PRACTICE_NUMBER, AUTH_TOKEN):
        assert secret not in caplog.text
