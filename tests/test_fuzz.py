"""Fuzzing the parsers that take bytes from outside (issue 18, item 11), on a fixed budget.

The FastAGI reader (what Asterisk writes, with a caller's text inside it), the ESL decoder
(what FreeSWITCH writes) and the SMS webhook (what anyone on the internet may post) each
take arbitrary and mutated input to a result or to their own named error: never another
exception, never a 500, never a routing decision a caller's text rewrote.  The TIFF reader
and the YAML loader have theirs in test_fax_pdf.py and test_config_bounds.py.

Each runs ``BACKLINE_FUZZ_EXAMPLES`` examples (300 unless set), derandomized: CI runs the
same inputs every time, and a longer local run (``BACKLINE_FUZZ_EXAMPLES=20000``) explores
further.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backline.features.sms import webhook
from backline.features.sms.twilio import InboundSms
from backline.pbx.asterisk.fastagi import (
    MAX_HEADER_BYTES,
    MAX_VALUE,
    AgiHangup,
    AgiProtocolError,
    AgiRequest,
    AgiSession,
    known_key,
)
from backline.pbx.freeswitch.wire import (
    Decoder,
    Frame,
    Headers,
    ProtocolError,
    classify,
    decode_event,
)
from backline.pbx.freeswitch.wire.messages import _EMPTY_LINE, _decode_value, _event_lines
from tests.harness.sms_gateway import AUTH_TOKEN, inbound_params, twilio_signature

FUZZ = settings(max_examples=int(os.environ.get("BACKLINE_FUZZ_EXAMPLES", "300")),
                deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --------------------------------------------------------------------------- helpers


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A seed with a few bytes replaced, inserted, deleted or a run duplicated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["replace", "insert", "delete", "repeat"])):
            case "replace" if at < len(data):
                data[at] = draw(st.integers(0, 255))
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            case "delete":
                del data[at:at + draw(st.integers(1, 16))]
            case "repeat":
                data[at:at] = data[at:at + draw(st.integers(1, 64))] * draw(st.integers(1, 4))
            case _:
                pass
    return bytes(data)


# --------------------------------------------------------------------------- FastAGI

AGI_BLOCK = (b"agi_network: yes\n"
             b"agi_network_script: inbound\n"
             b"agi_request: agi://127.0.0.1:4573/inbound\n"
             b"agi_channel: PJSIP/carrier-00000001\n"
             b"agi_language: en\n"
             b"agi_type: PJSIP\n"
             b"agi_uniqueid: 1733300000.1\n"
             b"agi_version: 22.10.0\n"
             b"agi_callerid: 7205550141\n"
             b"agi_calleridname: Bob\n"
             b"agi_callingpres: 0\n"
             b"agi_dnid: +13125550100\n"
             b"agi_rdnis: unknown\n"
             b"agi_context: backline-inbound\n"
             b"agi_extension: +13125550100\n"
             b"agi_priority: 2\n"
             b"agi_enhanced: 0.0\n"
             b"agi_accountcode: \n"
             b"agi_threadid: 140000000000000\n"
             b"agi_arg_1: +13125550100\n"
             b"agi_arg_2: +17205550141\n"
             b"\n")


async def _read(block: bytes) -> AgiRequest:
    reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES)  # as FastAgiServer reads
    reader.feed_data(block)
    reader.feed_eof()
    return await AgiSession(reader, None).read_request()  # type: ignore[arg-type]


def read_request(block: bytes) -> AgiRequest | Exception:
    try:
        return asyncio.run(_read(block))
    except (AgiHangup, AgiProtocolError) as named:
        return named


CLEAN = asyncio.run(_read(AGI_BLOCK))


@FUZZ
@given(st.binary(max_size=400) | mutated([AGI_BLOCK]))
def test_the_fastagi_reader_takes_any_bytes_to_a_request_or_its_own_error(block: bytes) -> None:
    request = read_request(block)
    if isinstance(request, AgiRequest):
        assert all(known_key(k) and len(v) <= MAX_VALUE for k, v in request.headers.items())
        assert len(request.args) <= 16


@st.composite
def injected_lines(draw: st.DrawFn) -> bytes:
    """A caller ID that carries header lines of its own: the arguments routing reads, the
    script, or anything."""
    lines = draw(st.lists(st.tuples(
        st.sampled_from([b"agi_arg_1", b"agi_arg_2", b"agi_arg_3", b"agi_network_script",
                         b"agi_extension", b"agi_request", b"agi_x"]),
        st.sampled_from([b"+13125550199", b"inbound", b"fax_heard", b""])), min_size=1,
        max_size=3))
    end = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
    return draw(st.binary(max_size=12)) + b"".join(end + k + b": " + v for k, v in lines)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode) | injected_lines())
def test_a_caller_id_cannot_change_what_the_call_is_routed_on(caller: bytes) -> None:
    """Asterisk writes agi_callerid unescaped: whatever it holds, the request is refused, or
    it carries the dialplan's own two arguments (the inbound handler routes on nothing
    else, and takes no request without exactly two)."""
    block = AGI_BLOCK.replace(b"agi_callerid: 7205550141\n", b"agi_callerid: " + caller + b"\n")
    request = read_request(block)
    if isinstance(request, AgiRequest) and len(request.args) == 2:
        assert request.args == CLEAN.args
        assert request.script == "inbound"


# --------------------------------------------------------------------------- ESL

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "esl"
ESL_SEEDS = [p.read_bytes() for p in sorted(FIXTURES.glob("*.bin"))]


def decode(data: bytes, step: int) -> list[Frame] | ProtocolError:
    decoder = Decoder()
    frames: list[Frame] = []
    try:
        for i in range(0, len(data), step):
            frames += decoder.feed(data[i:i + step])
        decoder.eof()
    except ProtocolError as error:
        return error
    return frames


@FUZZ
@given(st.binary(max_size=400) | mutated(ESL_SEEDS), st.integers(1, 64))
def test_the_esl_decoder_takes_any_bytes_in_any_split_to_frames_or_its_own_error(
        data: bytes, step: int) -> None:
    whole, split = decode(data, max(1, len(data))), decode(data, step)
    # However the stream was cut, the same frames (or the same break).
    assert type(whole) is type(split)
    if isinstance(whole, list):
        assert whole == split
        for frame in whole:
            with contextlib.suppress(ProtocolError):
                classify(frame)


@FUZZ
@given(st.binary(max_size=300) | mutated([b"Event-Name: CHANNEL_CREATE\nUnique-ID: a%20b\n"
                                          b"Caller-Caller-ID-Number: 7205550141\n\n"]))
def test_an_event_body_decodes_or_is_refused_by_name(body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_event(body)


def _line_by_line(data: bytes) -> tuple[str, Headers, bytes, str | None]:
    """The event as the line-by-line reader makes of it (the reference for the fast path)."""
    end = _EMPTY_LINE.search(data)
    if end is None:
        raise ProtocolError("no empty line")
    rest = data[end.end():]
    headers = tuple((k, _decode_value(v)) for k, v in _event_lines(data[: end.start()], rest))
    name = next((v for k, v in headers if k.lower() == "event-name"), None)
    if not name:
        raise ProtocolError("no Event-Name")
    subclass = next((v for k, v in headers if k.lower() == "event-subclass"), None)
    return name, headers, rest, subclass if name == "CUSTOM" else None


_EVENT_BYTES = st.lists(st.sampled_from([b"a", b"Z", b"-", b":", b" ", b"%", b"4", b"1",
                                         b"\n", b"\r", b"_undef_", b"\xc3\xa9",
                                         b"Event-Name: CUSTOM\n", b"Content-Length: 2\n",
                                         b"Event-Subclass: x%3A%3Ay\n"]),
                        max_size=40).map(b"".join)


@FUZZ
@given(_EVENT_BYTES | mutated([b"Event-Name: CUSTOM\nEvent-Subclass: sofia%3A%3Aregister\n"
                                b"contact: %22ana%22%20%3Csip%3Aana%40127.0.0.1%3E\n"
                                b"expires: 3600\nEmpty: _undef_\n\n",
                                b"Event-Name: BACKGROUND_JOB\nContent-Length: 3\n\n+OK",
                                b"Event-Name: CUSTOM\n:x: y\n\n",  # a line with no name
                                b"Event-Name: CUSTOM\nno colon\nA: b\n\n",
                                b"Event-Name: CUSTOM\na::b\n\n"]))  # a value after a colon
def test_an_event_reads_the_same_whole_as_line_by_line(body: bytes) -> None:
    # decode_event reads a plain ASCII block with one regex; it must agree with the line by
    # line reader on every body: the same event, or a refusal.
    try:
        expected: object = _line_by_line(body)
    except ProtocolError:
        expected = ProtocolError
    try:
        event = decode_event(body)
        got: object = (event.name, event.headers, event.body, event.subclass)
    except ProtocolError:
        got = ProtocolError
    assert got == expected
    if isinstance(expected, tuple):
        # ``get`` finds a name in the block itself: the first header of that name, in any
        # case, as the lines have it; none for a name no line has.
        headers = expected[1]
        for name in [k for k, _ in headers] + ["event-name", "EVENT-SUBCLASS", "Missing",
                                               "a:", "", "\nA"]:
            for asked in (name, name.upper(), name.lower()):
                first = next((v for k, v in headers if k.lower() == asked.lower()), None)
                assert event.get(asked) == first, (asked, headers)


# --------------------------------------------------------------------------- SMS webhook

PUBLIC = "https://backline.example"
TEXTS = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
FIELDS = st.sampled_from(["From", "To", "Body", "MessageSid", "AccountSid", "NumMedia",
                          "SmsSid", "X", ""])


class Webhook:
    """The real webhook routes in an aiohttp app on a loopback port, for one example."""

    def __init__(self) -> None:
        self.taken: list[InboundSms] = []
        self.refused: list[str] = []

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        async def on_sms(sms: InboundSms) -> None:
            self.taken.append(sms)

        async def on_refused(reason: str, remote: str) -> None:
            self.refused.append(reason)

        app = web.Application()
        app.add_routes(webhook.make_sms_routes(PUBLIC, lambda: AUTH_TOKEN, on_sms, on_refused))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            async with aiohttp.ClientSession() as http, http.post(
                    f"http://127.0.0.1:{site.port}{webhook.PATH}", data=body,
                    headers=headers) as response:
                return response.status
        finally:
            await runner.cleanup()


def post(body: bytes, signature: str | None,
         content_type: str = "application/x-www-form-urlencoded") -> tuple[int, Webhook]:
    hook = Webhook()
    headers = {"Content-Type": content_type}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return asyncio.run(hook.post(body, headers)), hook


@FUZZ
@given(st.binary(max_size=400) | mutated([urlencode(inbound_params(
           "+17205550141", "+13125550100", "refill please")).encode()]),
       # What an HTTP client can send in a header (no control characters).
       st.none() | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                           max_size=40))
def test_any_post_is_refused_by_name_never_a_server_error(body: bytes,
                                                          signature: str | None) -> None:
    status, hook = post(body, signature)
    assert status in (400, 403, 413), status
    assert hook.taken == [] and len(hook.refused) == 1


@FUZZ
@given(st.lists(st.tuples(FIELDS, TEXTS), max_size=12))
def test_a_signed_form_is_taken_or_refused_as_malformed_never_a_server_error(
        fields: list[tuple[str, str]]) -> None:
    """Signed correctly (as a provider would, or an attacker holding the secret), whatever
    the fields hold: 200 with the message taken once, or 400."""
    status, hook = post(urlencode(fields).encode(),
                        twilio_signature(PUBLIC + webhook.PATH, fields, AUTH_TOKEN))
    assert status in (200, 400), status
    assert len(hook.taken) == (status == 200)
    if status == 200:
        assert hook.taken[0].body == dict(fields).get("Body", hook.taken[0].body)
