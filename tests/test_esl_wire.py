"""The Event Socket codec (backline.pbx.freeswitch.wire) and the test ESL server.

Three kinds of test, as STYLE.md asks:

* pure, table-driven, sync: fixtures of real FreeSWITCH frames fed whole and one byte at a
  time, malformed input, URL decoding, encoders and the injection guard;
* the codec against the test server (tests/harness/eslserver.py) over real TCP on 127.0.0.1,
  inbound and outbound, including the misbehaviour the driver must survive;
* greenswitch, an independent client, against the same server: if both agree the server is
  speaking FreeSWITCH and not just our own dialect. greenswitch runs in a thread with its own
  gevent hub and is never monkey-patched in; its known traps are reproduced on purpose.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backline.pbx.freeswitch import wire
from backline.pbx.freeswitch.wire import (
    ApiResponse,
    AuthRequest,
    ChannelData,
    CommandReply,
    Decoder,
    DisconnectNotice,
    Event,
    Frame,
    Message,
    ProtocolError,
    RudeRejection,
    classify,
    decode_event,
    url_decode,
)
from backline.pbx.ports import UnsafeValue
from tests.harness.eslserver import (
    GOODBYE,
    Channel,
    EslConnection,
    EslServer,
    RawReply,
    api_response,
    event_frame,
    huge_header_frame,
    serialize_event,
    url_encode,
)

FIXTURES = Path(__file__).parent / "fixtures" / "esl"
T = TypeVar("T")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def decode_whole(data: bytes) -> list[Frame]:
    decoder = Decoder()
    frames = decoder.feed(data)
    decoder.eof()
    return frames


def decode_bytewise(data: bytes) -> list[Frame]:
    decoder = Decoder()
    frames: list[Frame] = []
    for i in range(len(data)):
        frames += decoder.feed(data[i : i + 1])
    decoder.eof()
    return frames


# --------------------------------------------------------------------------- fixtures

# file -> the message kinds it holds, in order
FIXTURE_KINDS: dict[str, list[type]] = {
    "auth_request.bin": [AuthRequest],
    "auth_accepted.bin": [CommandReply],
    "auth_rejected.bin": [CommandReply, DisconnectNotice],
    "exit.bin": [CommandReply, DisconnectNotice],
    "bgapi_reply.bin": [CommandReply],
    "bgapi_reply_docs_2007.bin": [CommandReply],
    "api_response_no_reply.bin": [ApiResponse],
    "api_response_not_found.bin": [ApiResponse],
    "disconnect_notice.bin": [DisconnectNotice],
    "outbound_disconnect_notice.bin": [DisconnectNotice],
    "linger_notice.bin": [DisconnectNotice],
    "rude_rejection.bin": [RudeRejection, DisconnectNotice],
    "background_job_2008.bin": [Event],
    "channel_create_docs.bin": [Event],
    "heartbeat_docs.bin": [Event],
    "connect_reply_docs.bin": [ChannelData],
}


def test_every_fixture_file_is_listed() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.bin")) == sorted(FIXTURE_KINDS)


@pytest.mark.parametrize("name", sorted(FIXTURE_KINDS))
def test_fixture_parses_whole_and_byte_by_byte(name: str) -> None:
    data = fixture(name)
    whole = decode_whole(data)
    assert decode_bytewise(data) == whole
    assert [type(classify(f)) for f in whole] == FIXTURE_KINDS[name]


def test_all_fixtures_back_to_back_in_one_stream() -> None:
    names = sorted(FIXTURE_KINDS)
    stream = b"".join(fixture(n) for n in names)
    expected = [kind for n in names for kind in FIXTURE_KINDS[n]]
    assert [type(classify(f)) for f in decode_whole(stream)] == expected
    assert decode_bytewise(stream) == decode_whole(stream)


def only(data: bytes) -> Message:
    (frame,) = decode_whole(data)
    return classify(frame)


def test_background_job_2008_capture() -> None:
    frame = decode_whole(fixture("background_job_2008.bin"))[0]
    assert frame.headers[0] == ("Content-Length", "614")  # Content-Length comes first
    event = classify(frame)
    assert isinstance(event, Event)
    assert event.name == "BACKGROUND_JOB"
    assert event.get("Job-UUID") == "d19f2410-1548-11dd-9eeb-0d886880e312"
    assert event.body == b"+OK d19f45e4-1548-11dd-9eeb-0d886880e312\n"
    # The inner Content-Length is framing, not a header (greenswitch keeps the body in it).
    assert event.get("Content-Length") is None
    assert event.get("Job-Command-Arg") == "sofia/default/user2.comellas@192.168.1.40:5061 2001"
    assert event.get("Event-Date-GMT") == "Mon, 28 Apr 2008 17:30:47 GMT"


def test_connect_reply_is_a_bare_serialized_event() -> None:
    data = only(fixture("connect_reply_docs.bin"))
    assert isinstance(data, ChannelData)
    assert data.unique_id == "40117b0a-186e-11dd-bbcd-7b74b6b4d31e"
    assert data.get("Socket-Mode") == "async" and data.get("Control") == "full"
    assert data.get("variable_effective_caller_id_name") == "Extension 1001"
    assert data.get("variable_sip_h_P-Key-Flags") == 'keys="3"'
    sdp = data.get("variable_switch_r_sdp")
    assert sdp is not None and sdp.startswith("v=0\r\no=root ") and sdp.endswith("a=ptime:20\r\n")
    names = [name for name, _ in data.headers]
    assert names.count("variable_sofia_profile_domain_name") == 2  # duplicates are kept


def test_replies() -> None:
    bg = only(fixture("bgapi_reply.bin"))
    assert bg == CommandReply(
        ok=True,
        text="+OK Job-UUID: d8c7f660-37a6-4e73-9170-1a731c442148",
        job_uuid="d8c7f660-37a6-4e73-9170-1a731c442148",
        headers=bg.headers if isinstance(bg, CommandReply) else (),
    )
    old = only(fixture("bgapi_reply_docs_2007.bin"))
    assert isinstance(old, CommandReply) and old.job_uuid == "c7709e9c-1517-11dc-842a-d3a3942d3d63"
    rejected = [classify(f) for f in decode_whole(fixture("auth_rejected.bin"))]
    assert isinstance(rejected[0], CommandReply) and not rejected[0].ok
    assert rejected[0].text == "-ERR invalid"
    assert rejected[1] == DisconnectNotice(message=GOODBYE.decode())
    assert only(fixture("api_response_no_reply.bin")) == ApiResponse(b"-ERR no reply\n")


def test_disconnect_notices() -> None:
    inbound = only(fixture("disconnect_notice.bin"))
    assert isinstance(inbound, DisconnectNotice) and len(inbound.message) == 67
    assert inbound.disposition is None and inbound.session_uuid is None
    outbound = only(fixture("outbound_disconnect_notice.bin"))
    assert outbound == DisconnectNotice(
        GOODBYE.decode(), "disconnect", "40117b0a-186e-11dd-bbcd-7b74b6b4d31e"
    )
    linger = only(fixture("linger_notice.bin"))
    assert linger == DisconnectNotice("", "linger", "40117b0a-186e-11dd-bbcd-7b74b6b4d31e", -1)


def test_documented_events_decode() -> None:
    created = only(fixture("channel_create_docs.bin"))
    assert isinstance(created, Event) and created.name == "CHANNEL_CREATE"
    assert created.get("Event-Date-Local") == "2009-08-16 00:26:08"
    assert created.get("FreeSWITCH-IPv6") == "::1"
    assert created.get("Channel-Name") == "sofia/internal/1000@192.168.1.100"
    assert created.body == b""
    beat = only(fixture("heartbeat_docs.bin"))
    assert isinstance(beat, Event) and beat.name == "HEARTBEAT"
    assert beat.get("FreeSWITCH-Hostname") == "********"  # as the docs print it
    assert (beat.get("Up-Time") or "").startswith("0 years, 0 days, ")


# --------------------------------------------------------------------------- framing rules


def test_lenient_where_freeswitch_is() -> None:
    # Blank lines before a frame are skipped (read_packet's "bah"), CRLF is accepted, and
    # spaces after the colon are optional.
    data = b"\n\r\n\nContent-Type: command/reply\r\nReply-Text:+OK\r\n\r\n"
    assert [classify(f) for f in decode_bytewise(data)] == [
        CommandReply(True, "+OK", None, (("Content-Type", "command/reply"), ("Reply-Text", "+OK")))
    ]
    decoder = Decoder()
    assert decoder.feed(b"\n\n\n") == [] and decoder.pending == 0
    decoder.eof()  # blank lines alone are not a partial frame


MALFORMED: list[tuple[str, bytes]] = [
    ("non-numeric length", b"Content-Type: api/response\nContent-Length: 12abc\n\n"),
    ("negative length", b"Content-Type: api/response\nContent-Length: -5\n\n"),
    ("signed length", b"Content-Type: api/response\nContent-Length: +5\n\n"),
    ("empty length", b"Content-Type: api/response\nContent-Length: \n\n"),
    ("length with trailing space", b"Content-Type: api/response\nContent-Length: 5 \n\n"),
    ("length over 16 MiB", b"Content-Type: api/response\nContent-Length: 16777217\n\n"),
    ("length of 400 digits", b"Content-Type: api/response\nContent-Length: %s\n\n" % (b"9" * 400)),
    ("two lengths", b"Content-Type: api/response\nContent-Length: 1\nContent-Length: 2\n\n"),
    ("no content type", b"Reply-Text: +OK\n\n"),
    ("line without colon", b"Content-Type: command/reply\nReply-Text +OK\n\n"),
    ("empty header name", b"Content-Type: command/reply\n: +OK\n\n"),
]


@pytest.mark.parametrize(("case", "data"), MALFORMED, ids=[c for c, _ in MALFORMED])
def test_malformed_frames_raise_protocol_error(case: str, data: bytes) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(data)
    decoder = Decoder()
    with pytest.raises(ProtocolError):
        for i in range(len(data)):
            decoder.feed(data[i : i + 1])
    assert decoder.pending == 0  # nothing kept once broken ...
    with pytest.raises(ProtocolError):  # ... and broken stays broken
        decoder.feed(b"Content-Type: auth/request\n\n")
    with pytest.raises(ProtocolError):
        decoder.eof()


def test_a_megabyte_header_line_is_refused_without_buffering_it() -> None:
    data = huge_header_frame(1_000_000)
    decoder = Decoder()
    fed = 0
    with pytest.raises(ProtocolError, match="header block exceeds"):
        for start in range(0, len(data), 4096):
            fed += 4096
            decoder.feed(data[start : start + 4096])
    assert fed <= wire.MAX_HEADER_BYTES + 2 * 4096
    small = Decoder(max_header_bytes=1024)  # byte by byte, with a small bound to stay fast
    with pytest.raises(ProtocolError):
        for i in range(4096):
            small.feed(data[i : i + 1])
    assert small.pending == 0


def test_eof_inside_a_frame_is_a_protocol_error() -> None:
    truncated = api_response(b"+OK 0123", content_length=100)
    decoder = Decoder()
    assert decoder.feed(truncated) == [] and decoder.pending == len(truncated)
    with pytest.raises(ProtocolError, match="8 of 100 body bytes"):
        decoder.eof()
    half_headers = Decoder()
    half_headers.feed(b"Content-Type: command/reply\nReply-")
    with pytest.raises(ProtocolError, match="inside a header block"):
        half_headers.eof()


def test_body_bytes_are_opaque() -> None:
    # An api body may hold blank lines and "Content-Type:" text; only the length counts.
    body = b"Content-Type: auth/request\n\n\x00\xff\n\n"
    frames = decode_bytewise(api_response(body) + fixture("auth_request.bin"))
    assert [classify(f) for f in frames] == [ApiResponse(body), AuthRequest()]


BAD_EVENTS: list[tuple[str, bytes]] = [
    ("inner length too big", b"Event-Name: X\nContent-Length: 10\n\nshort"),
    ("inner length too small", b"Event-Name: X\nContent-Length: 2\n\nlonger"),
    ("bytes after a bodiless event", b"Event-Name: X\n\ntrailing"),
    ("no end of headers", b"Event-Name: X\n"),
    ("no Event-Name", b"Unique-ID: abc\n\n"),
    ("inner length not a number", b"Event-Name: X\nContent-Length: x\n\n"),
]


@pytest.mark.parametrize(("case", "body"), BAD_EVENTS, ids=[c for c, _ in BAD_EVENTS])
def test_bad_event_bodies_raise_protocol_error(case: str, body: bytes) -> None:
    with pytest.raises(ProtocolError):
        classify(decode_whole(event_frame(body))[0])


def test_command_reply_without_reply_text_is_refused() -> None:
    with pytest.raises(ProtocolError):
        classify(decode_whole(b"Content-Type: command/reply\nFoo: bar\n\n")[0])


# --------------------------------------------------------------------------- URL decoding

URL_CASES = [
    ("2008-04-28%2014%3A30%3A47", "2008-04-28 14:30:47"),
    ("+OK", "+OK"),  # '+' is not a space here
    ("%2BOK%0A", "+OK\n"),
    ("%c3%a9t%C3%A9", "été"),  # switch_url_decode reads lower-case hex too
    ("100%", "100%"),  # bad encoding is kept as is ...
    ("%4", "%4"),
    ("%ZZ%", "%ZZ%"),
    ("a%2", "a%2"),
    ("%FF", "\ufffd"),  # ... and bytes that are not UTF-8 become U+FFFD
    ("sofia/default/1005%20'%26park'", "sofia/default/1005 '&park'"),
]


@pytest.mark.parametrize(("raw", "decoded"), URL_CASES)
def test_url_decode(raw: str, decoded: str) -> None:
    assert url_decode(raw) == decoded


def test_undef_is_the_empty_value() -> None:
    event = decode_event(serialize_event([("Event-Name", "X"), ("Empty", "")]))
    assert b"Empty: _undef_\n" in serialize_event([("Empty", "")])
    assert event.get("Empty") == ""


# switch_url_encode leaves a "%" alone when two upper-case hex digits follow (it takes them
# for an escape already made: url_encode), so such text decodes to something else, in
# FreeSWITCH as here ("%00" came back as NUL once Hypothesis happened to generate it).  The
# round trips hold for all other text.
_ALREADY_ESCAPED = re.compile(r"%[0-9A-F]{2}")
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40).filter(
    lambda v: not _ALREADY_ESCAPED.search(v))


# No deadline: a loaded machine can stall one example past Hypothesis's 200 ms, which it
# reports as a failure ("Unreliable test timings") though the property held.  Derandomized,
# as tests/test_fuzz.py is: every CI run tries the same examples.
@settings(deadline=None, derandomize=True, database=None)
@given(_TEXT)
def test_url_encode_then_decode_is_identity(value: str) -> None:
    assert url_decode(url_encode(value)) == value


@settings(deadline=None, derandomize=True, database=None)
@given(
    st.lists(
        st.tuples(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True), _TEXT),
        max_size=8,
    ).map(lambda pairs: [(n, v) for n, v in pairs if n.lower() != "content-length"]),
    st.binary(max_size=64),
)
def test_serialized_events_round_trip(pairs: list[tuple[str, str]], body: bytes) -> None:
    pairs = [(n, v) for n, v in pairs if v != "_undef_"]  # the one value serialize loses
    headers = [("Event-Name", "CUSTOM"), ("Event-Subclass", "x::y"), *pairs]
    serialized = serialize_event(headers, body)
    for frames in (decode_whole(event_frame(serialized)), decode_bytewise(event_frame(serialized))):
        event = classify(frames[0])
        assert isinstance(event, Event)
        assert list(event.headers) == headers
        assert event.body == body and event.subclass == "x::y"


# --------------------------------------------------------------------------- encoders

ENCODED: list[tuple[bytes, bytes]] = [
    (wire.encode_api("status"), b"api status\n\n"),
    (
        wire.encode_api("originate", "{origination_uuid=abc}sofia/gateway/gw/+15551234 &park()"),
        b"api originate {origination_uuid=abc}sofia/gateway/gw/+15551234 &park()\n\n",
    ),
    (wire.encode_bgapi("status"), b"bgapi status\n\n"),
    (
        wire.encode_bgapi("originate", "user/101 &park()", job_uuid="job-1"),
        b"bgapi originate user/101 &park()\nJob-UUID: job-1\n\n",
    ),
    (
        wire.encode_event_plain(["CHANNEL_CREATE", "CUSTOM", "sofia::register"]),
        b"event plain CHANNEL_CREATE CUSTOM sofia::register\n\n",
    ),
    (
        wire.encode_sendmsg("playback", "/tmp/a b.wav", event_lock=True),
        b"sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
        b"execute-app-arg: /tmp/a b.wav\nevent-lock: true\n\n",
    ),
    (
        wire.encode_sendmsg("answer", uuid="u-1", event_uuid="e-1"),
        b"sendmsg u-1\ncall-command: execute\nexecute-app-name: answer\nEvent-UUID: e-1\n\n",
    ),
    (wire.encode_connect(), b"connect\n\n"),
    (wire.encode_myevents(), b"myevents\n\n"),
    (wire.encode_myevents("u-1"), b"myevents u-1\n\n"),
    (wire.encode_linger(), b"linger\n\n"),
    (wire.encode_linger(30), b"linger 30\n\n"),
]


@pytest.mark.parametrize(("got", "expected"), ENCODED)
def test_encoders(got: bytes, expected: bytes) -> None:
    assert got == expected


INJECTIONS: list[tuple[str, Callable[[], bytes]]] = [
    ("api arg LF", lambda: wire.encode_api("originate", "user/1 &park()\n\nexit")),
    ("api command space", lambda: wire.encode_api("originate user/1")),
    ("api empty", lambda: wire.encode_api("")),
    ("bgapi arg CR", lambda: wire.encode_bgapi("status", "x\rJob-UUID: y")),
    ("bgapi job uuid LF", lambda: wire.encode_bgapi("status", job_uuid="a\nb")),
    ("bgapi job uuid too long", lambda: wire.encode_bgapi("status", job_uuid="x" * 37)),
    ("event name LF", lambda: wire.encode_event_plain(["ALL\n\napi x"])),
    ("event none", lambda: wire.encode_event_plain([])),
    ("sendmsg arg LF", lambda: wire.encode_sendmsg("playback", "a.wav\ncall-command: hangup")),
    ("sendmsg app with space", lambda: wire.encode_sendmsg("play back")),
    ("sendmsg arg leading space", lambda: wire.encode_sendmsg("playback", " a.wav")),
    ("sendmsg uuid LF", lambda: wire.encode_sendmsg("answer", uuid="u\n")),
    ("myevents uuid space", lambda: wire.encode_myevents("u 1")),
    ("linger zero", lambda: wire.encode_linger(0)),
]


@pytest.mark.parametrize(("case", "build"), INJECTIONS, ids=[c for c, _ in INJECTIONS])
def test_unsafe_arguments_are_refused(case: str, build: Callable[[], bytes]) -> None:
    with pytest.raises(UnsafeValue) as caught:
        build()
    assert isinstance(caught.value, ValueError)  # callers may treat it as a bad value


# --------------------------------------------------------------------------- a client for tests


_OPEN: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _OPEN:
        writer = _OPEN.pop()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class WireClient:
    """Our codec on an asyncio stream: the smallest possible ESL client, for tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        _OPEN.append(writer)
        self.decoder = Decoder()
        self.frames: collections.deque[Frame] = collections.deque()

    @classmethod
    async def connect(cls, server: EslServer) -> WireClient:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self) -> Frame:
        async with asyncio.timeout(30):  # bounds a hang
            while not self.frames:
                data = await self.reader.read(65536)
                if not data:
                    self.decoder.eof()
                    raise EOFError("server closed between frames")
                self.frames.extend(self.decoder.feed(data))
        return self.frames.popleft()

    async def message(self) -> Message:
        return classify(await self.frame())

    async def closed(self) -> None:
        """The server closes; nothing else arrives before."""
        with pytest.raises(EOFError):
            await self.frame()

    def close(self) -> None:
        self.writer.close()


async def logged_in(server: EslServer) -> WireClient:
    client = await WireClient.connect(server)
    assert await client.message() == AuthRequest()
    client.send(f"auth {server.password}\n\n".encode())
    reply = await client.message()
    assert isinstance(reply, CommandReply) and reply.text == "+OK accepted"
    return client


# --------------------------------------------------------------------------- inbound


async def test_auth_then_api_round_trip_and_recorded_commands() -> None:
    async with EslServer() as server:
        server.script_api("originate", lambda arg: f"+OK {arg.split()[-1]}\n" if arg else "")
        client = await logged_in(server)
        client.send(wire.encode_api("originate", "user/101 uuid-1"))
        assert await client.message() == ApiResponse(b"+OK uuid-1\n")
        client.send(wire.encode_api("bogus"))
        assert await client.message() == ApiResponse(b"-ERR bogus Command not found!\n")
        client.send(wire.encode_api("originate"))  # no arg: the handler prints nothing
        assert await client.message() == ApiResponse(b"-ERR no reply\n")
        # The server saw exactly the bytes our encoders produced, split as read_packet does.
        assert [c.raw for c in server.commands] == [
            b"auth ClueCon\n\n",
            b"api originate user/101 uuid-1\n\n",
            b"api bogus\n\n",
            b"api originate\n\n",
        ]
        assert server.commands[1].command == "api originate user/101 uuid-1"
        client.send(b"exit\n\n")
        assert await client.message() == CommandReply(
            True, "+OK bye", None, (("Content-Type", "command/reply"), ("Reply-Text", "+OK bye"))
        )
        assert await client.message() == DisconnectNotice(GOODBYE.decode())
        await client.closed()
        conn = server.connections[0]
        assert bytes(conn.sent).endswith(fixture("exit.bin"))
        greeting = fixture("auth_request.bin") + fixture("auth_accepted.bin")
        assert bytes(conn.sent).startswith(greeting)


async def test_wrong_password_gets_err_invalid_and_the_goodbye() -> None:
    async with EslServer(password="secret") as server:
        client = await WireClient.connect(server)
        assert await client.message() == AuthRequest()
        client.send(b"auth ClueCon\n\n")
        reply = await client.message()
        assert isinstance(reply, CommandReply) and not reply.ok and reply.text == "-ERR invalid"
        assert await client.message() == DisconnectNotice(GOODBYE.decode())
        await client.closed()
        assert bytes(server.connections[0].sent) == fixture("auth_request.bin") + fixture(
            "auth_rejected.bin"
        )


async def test_commands_before_auth_are_refused_but_the_socket_stays() -> None:
    async with EslServer() as server:
        client = await WireClient.connect(server)
        assert await client.message() == AuthRequest()
        client.send(wire.encode_api("status"))
        reply = await client.message()
        assert isinstance(reply, CommandReply) and reply.text == "-ERR command not found"
        client.send(b"auth ClueCon\n\n")
        reply = await client.message()
        assert isinstance(reply, CommandReply) and reply.ok


async def test_bgapi_flow_matches_the_source_byte_for_byte() -> None:
    clock = 1209403847.575107  # the 2008 capture's Event-Date-Timestamp
    async with EslServer(clock=lambda: clock) as server:
        release = asyncio.Event()

        async def originate(arg: str | None) -> str:
            await release.wait()  # the job is still running when the reply goes out
            return "+OK d19f45e4-1548-11dd-9eeb-0d886880e312\n"

        server.script_api("originate", originate)
        client = await logged_in(server)
        client.send(wire.encode_event_plain(["BACKGROUND_JOB"]))
        enabled = await client.message()
        assert isinstance(enabled, CommandReply)
        assert enabled.text == "+OK event listener enabled plain"
        job = "d19f2410-1548-11dd-9eeb-0d886880e312"
        arg = "sofia/default/user2.comellas@192.168.1.40:5061 2001"
        client.send(wire.encode_bgapi("originate", arg, job_uuid=job))
        reply_frame = await client.frame()
        conn = server.connections[0]
        expected_reply = (
            f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
        ).encode()
        assert bytes(conn.sent).endswith(expected_reply)
        reply = classify(reply_frame)
        assert isinstance(reply, CommandReply) and reply.ok and reply.job_uuid == job

        release.set()
        event_frame_ = await client.frame()
        raw = bytes(conn.sent)[bytes(conn.sent).index(expected_reply) + len(expected_reply) :]
        head = re.match(rb"Content-Length: (\d+)\nContent-Type: text/event-plain\n\n", raw)
        assert head is not None and int(head.group(1)) == len(raw) - head.end()
        inner = raw[head.end() :]
        # switch_event_create puts the core headers first; then api_exec's three headers;
        # then switch_event_serialize's Content-Length, the empty line and the result.
        names = [line.split(b":")[0] for line in inner.split(b"\n\n")[0].split(b"\n")]
        assert names == [
            b"Event-Name", b"Core-UUID", b"FreeSWITCH-Hostname", b"FreeSWITCH-Switchname",
            b"FreeSWITCH-IPv4", b"FreeSWITCH-IPv6", b"Event-Date-Local", b"Event-Date-GMT",
            b"Event-Date-Timestamp", b"Event-Calling-File", b"Event-Calling-Function",
            b"Event-Calling-Line-Number", b"Event-Sequence", b"Job-UUID", b"Job-Command",
            b"Job-Command-Arg", b"Content-Length",
        ]  # fmt: skip
        assert b"\nEvent-Date-GMT: Mon,%2028%20Apr%202008%2017%3A30%3A47%20GMT\n" in inner
        assert b"\nFreeSWITCH-IPv6: %3A%3A1\n" in inner
        encoded_arg = b"sofia/default/user2.comellas%40192.168.1.40%3A5061%202001"
        assert b"\nJob-Command-Arg: " + encoded_arg + b"\n" in inner
        assert inner.endswith(b"\nContent-Length: 41\n\n+OK d19f45e4-1548-11dd-9eeb-0d886880e312\n")
        # ... and decodes to what the 2008 capture decodes to.
        mine = classify(event_frame_)
        captured = only(fixture("background_job_2008.bin"))
        assert isinstance(mine, Event) and isinstance(captured, Event)
        for name in ("Event-Name", "Job-UUID", "Job-Command", "Job-Command-Arg", "Event-Date-GMT"):
            assert mine.get(name) == captured.get(name), name
        assert mine.body == captured.body


async def test_background_job_only_reaches_subscribers() -> None:
    async with EslServer() as server:
        done = asyncio.Event()

        def status(arg: str | None) -> str:
            done.set()
            return "UP\n"

        server.script_api("status", status)
        client = await logged_in(server)
        client.send(wire.encode_bgapi("status"))
        reply = await client.message()
        assert isinstance(reply, CommandReply) and reply.job_uuid
        await asyncio.wait_for(done.wait(), 30)
        # Replies and events share one ordered stream: had the event been sent, it would
        # arrive before the answer to this later command.
        client.send(wire.encode_api("status"))
        assert await client.message() == ApiResponse(b"UP\n")


async def test_events_are_held_while_a_command_runs() -> None:
    async with EslServer() as server:
        started, release = asyncio.Event(), asyncio.Event()

        async def slow(arg: str | None) -> str:
            started.set()
            await release.wait()
            return "+OK\n"

        server.script_api("slow", slow)
        client = await logged_in(server)
        client.send(wire.encode_event_plain(["HEARTBEAT"]))
        await client.message()
        client.send(wire.encode_api("slow"))
        await asyncio.wait_for(started.wait(), 30)
        server.fire_event("HEARTBEAT", [("Event-Info", "System Ready")])
        release.set()
        # read_packet flushes events only between packets: the api answer comes first.
        assert await client.message() == ApiResponse(b"+OK\n")
        beat = await client.message()
        assert isinstance(beat, Event) and beat.get("Event-Info") == "System Ready"


async def test_event_subscriptions_and_filters() -> None:
    async with EslServer() as server:
        client = await logged_in(server)
        client.send(wire.encode_event_plain(["CHANNEL_CREATE", "CUSTOM", "sofia::register"]))
        assert isinstance(await client.message(), CommandReply)
        server.fire_event("HEARTBEAT")  # not subscribed
        server.fire_event("CUSTOM", subclass="sofia::expire")  # other subclass
        server.fire_event("CUSTOM", [("profile-name", "internal")], subclass="sofia::register")
        server.fire_event("CHANNEL_CREATE", [("Unique-ID", "a")])
        registered = await client.message()
        assert isinstance(registered, Event) and registered.subclass == "sofia::register"
        created = await client.message()
        assert isinstance(created, Event) and created.get("Unique-ID") == "a"

        client.send(b"filter Unique-ID b\n\n")
        reply = await client.message()
        assert isinstance(reply, CommandReply) and reply.text == "+OK filter added. [Unique-ID]=[b]"
        server.fire_event("CHANNEL_CREATE", [("Unique-ID", "a")])
        server.fire_event("CHANNEL_CREATE", [("Unique-ID", "b")])
        only_b = await client.message()
        assert isinstance(only_b, Event) and only_b.get("Unique-ID") == "b"

        client.send(b"event plain NOT_AN_EVENT\n\n")
        reply = await client.message()
        assert isinstance(reply, CommandReply) and reply.text == "-ERR no keywords supplied"


# --------------------------------------------------------------------------- misbehaviour


async def test_truncated_api_body_then_close_is_a_protocol_error() -> None:
    async with EslServer() as server:
        cut_short = api_response(b"UP 0 years", content_length=4096)
        server.script_api("status", RawReply(cut_short, close=True))
        client = await logged_in(server)
        client.send(wire.encode_api("status"))
        with pytest.raises(ProtocolError, match="10 of 4096 body bytes"):
            await client.frame()


async def test_wrong_content_length_desynchronises_into_a_protocol_error() -> None:
    async with EslServer() as server:
        # Announces 2 bytes, sends 8: the rest is read as a header line with no colon. The
        # frame completed in the same feed is dropped with the error: the link is dead.
        server.script_api("status", RawReply(api_response(b"UPTIME\n\n", content_length=2)))
        client = await logged_in(server)
        client.send(wire.encode_api("status"))
        with pytest.raises(ProtocolError, match="colon"):
            await client.frame()
        with pytest.raises(ProtocolError):  # and it stays dead
            client.decoder.feed(b"Content-Type: auth/request\n\n")


async def test_a_megabyte_header_from_the_server() -> None:
    async with EslServer() as server:
        server.script_api("status", RawReply(huge_header_frame(1_000_000)))
        client = await logged_in(server)
        client.send(wire.encode_api("status"))
        with pytest.raises(ProtocolError, match="header block exceeds"):
            await client.frame()
        assert client.decoder.pending == 0


async def test_bad_url_encoding_is_kept_verbatim() -> None:
    async with EslServer() as server:
        client = await logged_in(server)
        client.send(wire.encode_event_plain(["ALL"]))
        await client.message()
        conn = server.connections[0]
        conn.send_raw(event_frame(serialize_event(
            [("Event-Name", "CUSTOM"), ("Odd", "50%ZZ%4"), ("Fine", "a%20b")], encode=False
        )))  # fmt: skip
        event = await client.message()
        assert isinstance(event, Event)
        assert event.get("Odd") == "50%ZZ%4" and event.get("Fine") == "a b"


async def test_sudden_disconnect_sends_nothing() -> None:
    async with EslServer() as server:
        client = await logged_in(server)
        sent_before = len(server.connections[0].sent)
        server.connections[0].drop()
        with pytest.raises((EOFError, ConnectionError)):
            await client.frame()
        assert len(server.connections[0].sent) == sent_before  # no disconnect notice


async def test_acl_rejection_and_silent_server() -> None:
    async with EslServer(reject=True) as server:
        client = await WireClient.connect(server)
        assert isinstance(await client.message(), RudeRejection)
        assert await client.message() == DisconnectNotice(GOODBYE.decode())
        await client.closed()
        assert bytes(server.connections[0].sent) == fixture("rude_rejection.bin")
    async with EslServer(greet=False) as server:
        client = await WireClient.connect(server)
        conn = await server.wait_connection()
        client.close()
        await asyncio.wait_for(conn.closed.wait(), 30)
        assert conn.sent == b""  # it never said a word


async def test_first_packet_timeout_ends_the_connection() -> None:
    async with EslServer(auth_timeout=0.05) as server:
        client = await WireClient.connect(server)
        assert await client.message() == AuthRequest()
        # listener_run reads the auth packet with a 25 s limit, then says goodbye.
        assert await client.message() == DisconnectNotice(GOODBYE.decode())
        await client.closed()


# --------------------------------------------------------------------------- outbound


class SocketApp:
    """The far end of an outbound socket: a listening app, as Backline's driver will be."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[WireClient] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> SocketApp:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.accepted.put(WireClient(reader, writer))

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def call(
        self, server: EslServer, channel: Channel, **kwargs: Any
    ) -> tuple[EslConnection, WireClient]:
        conn = await server.dial("127.0.0.1", self.port, channel, **kwargs)
        return conn, await asyncio.wait_for(self.accepted.get(), 30)


async def test_outbound_connect_myevents_sendmsg_linger_and_hangup() -> None:
    channel = Channel(caller_id_number="+13125550100", destination_number="+13125550101")
    channel.variables["sip_from_display"] = "Dr Ana Lee"
    async with EslServer() as server, SocketApp() as app:
        conn, sock = await app.call(server, channel, full=True)
        sock.send(wire.encode_connect())
        data = await sock.message()
        assert isinstance(data, ChannelData)
        assert data.unique_id == channel.uuid
        assert data.get("Reply-Text") == "+OK\n" and data.get("Control") == "full"
        assert data.get("Caller-Caller-ID-Number") == "+13125550100"
        assert data.get("variable_sip_from_display") == "Dr Ana Lee"
        assert b"\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n" in bytes(conn.sent)
        assert not bytes(conn.sent).startswith(b"Content-Length")  # no envelope

        for command, text in [
            (wire.encode_myevents(), "+OK Events Enabled"),
            (wire.encode_myevents(), "-ERR aready enabled."),  # sic
            (wire.encode_linger(), "+OK will linger"),
        ]:
            sock.send(command)
            reply = await sock.message()
            assert isinstance(reply, CommandReply) and reply.text == text

        server.fire_event("CHANNEL_CREATE", [("Unique-ID", "someone-else")])  # not ours
        sock.send(wire.encode_sendmsg("answer", event_uuid="app-1"))
        reply = await sock.message()
        assert isinstance(reply, CommandReply) and reply.text == "+OK"
        names = []
        for _ in range(3):
            event = await sock.message()
            assert isinstance(event, Event) and event.get("Unique-ID") == channel.uuid
            names.append(event.name)
        assert names == ["CHANNEL_EXECUTE", "CHANNEL_ANSWER", "CHANNEL_EXECUTE_COMPLETE"]
        assert server.commands[-1].get("execute-app-name") == "answer"

        await conn.hangup("NORMAL_CLEARING")
        hangup = await sock.message()
        assert isinstance(hangup, Event) and hangup.get("Hangup-Cause") == "NORMAL_CLEARING"
        complete = await sock.message()
        assert isinstance(complete, Event) and complete.name == "CHANNEL_HANGUP_COMPLETE"
        assert await sock.message() == DisconnectNotice("", "linger", channel.uuid, -1)
        sock.send(b"exit\n\n")
        assert isinstance(await sock.message(), CommandReply)
        goodbye = DisconnectNotice(GOODBYE.decode(), "disconnect", channel.uuid)
        assert await sock.message() == goodbye
        await sock.closed()


async def test_outbound_without_full_refuses_linger_and_api() -> None:
    async with EslServer() as server, SocketApp() as app:
        _, sock = await app.call(server, Channel())
        sock.send(wire.encode_connect())
        assert isinstance(await sock.message(), ChannelData)
        refused = [
            wire.encode_linger(),
            wire.encode_api("status"),
            wire.encode_event_plain(["ALL"]),
        ]
        for command in refused:
            sock.send(command)
            reply = await sock.message()
            # parse_command: OUTBOUND && !FULL -> "goto done" -> "-ERR command not found".
            assert isinstance(reply, CommandReply) and reply.text == "-ERR command not found"


async def test_outbound_first_command_reply_is_swallowed() -> None:
    async with EslServer() as server, SocketApp() as app:
        channel = Channel()
        conn, sock = await app.call(server, channel)
        sock.send(wire.encode_myevents())  # not "connect": its reply is computed, never sent
        sock.send(wire.encode_connect())
        first = await sock.message()
        assert isinstance(first, ChannelData) and first.unique_id == channel.uuid
        assert [c.command for c in conn.commands] == ["myevents", "connect"]


async def test_outbound_hangup_without_linger_closes_at_once() -> None:
    async with EslServer() as server, SocketApp() as app:
        channel = Channel()
        _, sock = await app.call(server, channel, async_mode=False)
        sock.send(wire.encode_connect())
        data = await sock.message()
        assert isinstance(data, ChannelData) and data.get("Socket-Mode") == "static"
        sock.send(wire.encode_myevents())
        await sock.message()
        sock.send(wire.encode_sendmsg("hangup", "USER_BUSY"))
        assert isinstance(await sock.message(), CommandReply)  # sync mode: after the app ran
        seen = [await sock.message() for _ in range(4)]
        assert [m.name for m in seen if isinstance(m, Event)] == [
            "CHANNEL_EXECUTE",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_HANGUP",
            "CHANNEL_HANGUP_COMPLETE",
        ]
        goodbye = DisconnectNotice(GOODBYE.decode(), "disconnect", channel.uuid)
        assert await sock.message() == goodbye
        await sock.closed()


# --------------------------------------------------------------------------- greenswitch


def in_gevent_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``work`` in a fresh thread with its own gevent hub, destroyed afterwards.

    gevent is never monkey-patched into this process: greenswitch uses gevent.socket
    directly, and each thread gets its own hub, so the asyncio loop is never touched.
    """

    def run() -> T:
        import gevent

        try:
            with gevent.Timeout(60):
                return work()
        finally:
            gevent.get_hub().destroy(destroy_loop=True)

    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = asyncio.get_running_loop().run_in_executor(executor, run)
    executor.shutdown(wait=False)
    return future


def _greenswitch_stop(esl: Any) -> None:
    import gevent

    # esl.stop() waits up to a second on its event queue; end the greenlets directly.
    gevent.killall([esl._receive_events_greenlet, esl._process_events_greenlet])
    esl.sock_file.close()
    esl.sock.close()


async def test_greenswitch_authenticates_and_runs_api_against_the_server() -> None:
    async with EslServer() as server:
        server.script_api("status", "UP 0 years, 0 days\nFreeSWITCH (Version 1.10.12) is ready\n")
        port = server.port

        def session() -> tuple[str, str, str]:
            from greenswitch.esl import InboundESL

            esl = InboundESL(host="127.0.0.1", port=port, password="ClueCon", timeout=30)
            esl.connect()
            api = esl.send("api status")
            bye = esl.send("exit")
            _greenswitch_stop(esl)
            return str(api.headers["Content-Type"]), str(api.data), str(bye.data)

        content_type, body, bye = await in_gevent_thread(session)
        assert content_type == "api/response"
        assert body == "UP 0 years, 0 days\nFreeSWITCH (Version 1.10.12) is ready\n"
        assert bye == "+OK bye"
        sent = [c.raw for c in server.commands]
        assert sent == [b"auth ClueCon\n\n", b"api status\n\n", b"exit\n\n"]


async def test_greenswitch_trap_background_job_body_lands_in_content_length() -> None:
    async with EslServer() as server:
        server.script_api("originate", "+OK 7f4de4bc-17d7-11dd-b7a0-db4edd065621\n")
        port = server.port

        def session() -> tuple[str, str | None]:
            import gevent.event
            from greenswitch.esl import InboundESL

            got: gevent.event.AsyncResult = gevent.event.AsyncResult()
            esl = InboundESL(host="127.0.0.1", port=port, password="ClueCon", timeout=30)
            esl.connect()
            esl.register_handle("BACKGROUND_JOB", got.set)
            esl.send("event plain BACKGROUND_JOB")
            esl.send("bgapi originate user/101 &park()")
            event = got.get(timeout=30)
            _greenswitch_stop(esl)
            return str(event.headers["Content-Length"]), event.headers.get("Job-Command")

        content_length, command = await in_gevent_thread(session)
        assert command == "originate"
        # The trap: greenswitch's ESLEvent.parse_data appends the body lines to the last
        # header, so the job's result is found inside Content-Length, not in a body.
        assert content_length == "41\n\n+OK 7f4de4bc-17d7-11dd-b7a0-db4edd065621"


_SPIN_CHILD = textwrap.dedent(
    """
    import sys
    from greenswitch.esl import InboundESL
    esl = InboundESL(host="127.0.0.1", port=int(sys.argv[1]), password="ClueCon", timeout=30)
    esl.connect()
    print("connected", flush=True)
    esl.send("api status")
    """
)


async def test_greenswitch_trap_truncated_body_then_close_spins() -> None:
    """A body cut short, then close: greenswitch's _read_socket loops on b"" forever.

    Run in a child process (a spinning gevent hub cannot be interrupted from here); the
    proof is a stream of its "Socket should read N bytes" warnings with no data arriving.
    """
    async with EslServer() as server:
        server.script_api("status", RawReply(api_response(b"UP", content_length=100), close=True))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SPIN_CHILD, str(server.port),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(60):  # bounds a hang
                assert await proc.stdout.readline() == b"connected\n"
                conn = await server.wait_connection()
                await conn.closed.wait()  # the server has closed; nothing more will come
                warnings = 0
                while warnings < 200:
                    line = await proc.stderr.readline()
                    assert line, "the child stopped instead of spinning"
                    warnings += b"Socket should read 100 bytes, but actually read 2 bytes" in line
            assert proc.returncode is None  # still stuck
        finally:
            proc.kill()
            await proc.wait()
