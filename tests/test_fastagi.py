"""Our FastAGI server over a real TCP socket, fed as Asterisk feeds it, including the ways
panoramisk's server breaks: a hangup inside the header block, sync handlers, junk lines."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import AsyncIterator

import pytest

from backline.pbx.asterisk.dialplan_variables import AGI_DOCTOR, AGI_DOCTOR_REPLY
from backline.pbx.asterisk.fastagi import (
    MAX_VALUE,
    AgiProtocolError,
    AgiRequest,
    AgiSession,
    FastAgiServer,
    parse_header_line,
)
from backline.pbx.ports import UnsafeValue

HEADERS = (b"agi_network: yes\n"
           b"agi_network_script: inbound\n"
           b"agi_request: agi://127.0.0.1:4573/inbound\n"
           b"agi_channel: PJSIP/carrier-00000001\n"
           b"agi_callerid: 7205550141\n"
           b'agi_calleridname: "Bob\\"; Hangup()" <123;x>\n'
           b"agi_extension: +13125550100\n"
           b"agi_arg_1: ana-desk\n"
           b"\n")


class Seen:
    def __init__(self) -> None:
        self.requests: list[AgiRequest] = []
        self.done = asyncio.Event()


@pytest.fixture()
async def server() -> AsyncIterator[tuple[FastAgiServer, int, Seen]]:
    seen = Seen()

    async def inbound(request: AgiRequest, session: AgiSession) -> None:
        seen.requests.append(request)
        await session.set_variable("BACKLINE_ACTION", "ring")
        seen.done.set()

    srv = FastAgiServer({"inbound": inbound})
    port = await srv.start("127.0.0.1", 0)
    yield srv, port, seen
    await srv.stop()


async def test_headers_fed_one_byte_at_a_time_then_commands(
        server: tuple[FastAgiServer, int, Seen]) -> None:
    _, port, seen = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for byte in HEADERS:
        writer.write(bytes([byte]))
        await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 30)
    assert line == b'SET VARIABLE BACKLINE_ACTION "ring"\n'
    writer.write(b"200 result=1\n")
    await writer.drain()
    await asyncio.wait_for(seen.done.wait(), 30)
    assert await asyncio.wait_for(reader.read(), 30) == b""  # the server closes the session
    request = seen.requests[0]
    assert request.script == "inbound"
    assert request.get("extension") == "+13125550100"
    assert request.get("calleridname") == '"Bob\\"; Hangup()" <123;x>'  # data, verbatim
    assert request.args == ("ana-desk",)
    writer.close()


async def test_hangup_inside_the_header_block_ends_the_session_without_spinning(
        server: tuple[FastAgiServer, int, Seen]) -> None:
    srv, port, seen = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEADERS[:60])
    await writer.drain()
    writer.write_eof()  # Asterisk gone before the blank line
    # The server ends its side of the session. (panoramisk spins on b"" here and freezes
    # the loop; pytest-timeout would then fail this test.)
    assert await asyncio.wait_for(reader.read(), 30) == b""
    assert seen.requests == []
    writer.close()
    # ... and the next call is served as usual.
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
    writer2.write(HEADERS)
    await writer2.drain()
    assert (await asyncio.wait_for(reader2.readline(), 30)).startswith(b"SET VARIABLE")
    writer2.close()
    assert srv.sessions == 2


def test_sync_handlers_are_refused_at_registration() -> None:
    def sync_handler(request: AgiRequest, session: AgiSession) -> None:
        return None

    with pytest.raises(TypeError, match="must be async"):
        FastAgiServer({"inbound": sync_handler})  # type: ignore[dict-item]


@pytest.mark.parametrize("line", [
    b"Bob\n", b": x\n", b"AGI_EXTENSION: 1\n", b"agi_extension 1\n", b"\xff\xfe\n"])
def test_junk_header_lines_are_ignored(line: bytes) -> None:
    assert parse_header_line(line) is None


async def dropped_undecided(srv: FastAgiServer, port: int, seen: Seen, block: bytes) -> None:
    """``block`` gets no decision (the session is dropped and the dialplan's fallback takes
    the call), and the next call is served as usual."""
    failures = srv.failures
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(block)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 30) == b""
    assert seen.requests == [] and srv.failures == failures + 1
    writer.close()
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
    writer2.write(HEADERS)
    await writer2.drain()
    assert (await asyncio.wait_for(reader2.readline(), 30)).startswith(b"SET VARIABLE")
    writer2.close()


@pytest.mark.parametrize("caller", [
    b"7205550141\nagi_extension: 911",                        # before the real one
    b"7205550141\nagi_arg_1: raj-desk",                       # before the real argument
    b"7205550141\nagi_arg_2: raj-desk",                       # an argument never passed
    b"7205550141\nagi_extension: 911\nagi_extension: 911",    # twice, and once more
    b"7205550141\nagi_routing: 911",                          # a key Asterisk never sends
    b"7205550141\nmore text",                                 # not a header at all
], ids=["extension", "argument", "extra-argument", "thrice", "unknown-key", "junk"])
async def test_injected_header_cannot_overwrite_an_earlier_one(
        server: tuple[FastAgiServer, int, Seen], caller: bytes) -> None:
    # Asterisk writes agi_callerid unescaped: a caller ID with a line break adds lines.
    assert parse_header_line(b"agi_extension: 911\n") == ("agi_extension", "911")
    srv, port, seen = server
    block = HEADERS.replace(b"agi_callerid: 7205550141\n", b"agi_callerid: " + caller + b"\n")
    assert block != HEADERS
    await dropped_undecided(srv, port, seen, block)


async def test_a_caller_id_of_5000_characters_is_decided_with_the_value_cut(
        server: tuple[FastAgiServer, int, Seen]) -> None:
    _, port, seen = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEADERS.replace(b"agi_callerid: 7205550141\n",
                                 b"agi_callerid: " + b"7" * 5000 + b"\n"))
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 30) == b'SET VARIABLE BACKLINE_ACTION "ring"\n'
    writer.write(b"200 result=1\n")
    await writer.drain()
    await asyncio.wait_for(seen.done.wait(), 30)
    assert seen.requests[0].get("callerid") == "7" * MAX_VALUE
    assert seen.requests[0].get("extension") == "+13125550100"
    writer.close()


@pytest.mark.parametrize("value", ['x" EXEC Dial', "a\nb", "back\\slash", "$" "{SHELL(id)}"])
async def test_values_that_could_break_out_of_a_command_are_never_sent(value: str) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = AgiSession(reader, writer)
    with pytest.raises(UnsafeValue):
        await session.set_variable("BACKLINE_CID_NAME", value)
    writer.close()
    server.close()


async def test_each_command_waits_for_its_answer_before_the_next_goes_out() -> None:
    """Asterisk would leave commands sent ahead unread in its buffer (see set_variables)."""
    done = asyncio.Event()

    async def inbound(request: AgiRequest, session: AgiSession) -> None:
        await session.set_variables([("BACKLINE_VMBOX", "100"), ("BACKLINE_ACTION", "ring")])
        done.set()

    srv = FastAgiServer({"inbound": inbound})
    port = await srv.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEADERS)
    await writer.drain()
    first = await asyncio.wait_for(reader.readline(), 30)
    assert first == b'SET VARIABLE BACKLINE_VMBOX "100"\n'
    with pytest.raises(TimeoutError):  # nothing more until the first is answered
        await asyncio.wait_for(reader.readline(), 0.2)
    writer.write(b"200 result=1\n")
    await writer.drain()
    second = await asyncio.wait_for(reader.readline(), 30)
    assert second == b'SET VARIABLE BACKLINE_ACTION "ring"\n'
    writer.write(b"200 result=1\n")
    await writer.drain()
    await asyncio.wait_for(done.wait(), 30)
    writer.close()
    await srv.stop()


@pytest.mark.parametrize("block", [
    # (A 5,000-byte caller ID line is decided, its value cut: see above.)
    HEADERS.replace(b"agi_callerid: 7205550141\n", b"agi_callerid: " + b"7" * 40_000 + b"\n"),
    b"".join(b"agi_arg_%d: x\n" % i for i in range(1, 200)) + b"\n",
    b"agi_callerid: " + b"1" * 40_000,  # no end in sight
], ids=["a-40000-byte-line", "200-lines", "40-kB-without-end"])
async def test_an_oversized_header_block_is_refused_and_the_next_call_served(
        server: tuple[FastAgiServer, int, Seen], block: bytes) -> None:
    srv, port, seen = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(block)
    await writer.drain()
    # No decision: the session is dropped and the dialplan's fallback takes the call.
    assert await asyncio.wait_for(reader.read(), 30) == b""
    assert seen.requests == [] and srv.failures == 1
    writer.close()
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
    writer2.write(HEADERS)
    await writer2.drain()
    assert (await asyncio.wait_for(reader2.readline(), 30)).startswith(b"SET VARIABLE")
    writer2.close()


# res_agi.c: MAX_AGI_CONNECT, the milliseconds Asterisk gives a FastAGI connect before the
# AGI fails and the dialplan's fail-safe takes the call.
ASTERISK_CONNECT_MS = 2000


def connect_as_asterisk(port: int, calls: int) -> tuple[list[socket.socket], int]:
    """``calls`` non-blocking connects as res_agi makes them, each given Asterisk's connect
    time; blocking, so the server on this thread's loop accepts none meanwhile (a controller
    held up).  The sockets, and how many connected."""
    socks = []
    for _ in range(calls):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    _, writable, _ = select.select([], socks, [], ASTERISK_CONNECT_MS / 1000)
    return socks, sum(1 for s in writable
                      if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)


async def test_calls_arriving_while_the_loop_is_held_up_still_connect_then_are_served(
        server: tuple[FastAgiServer, int, Seen]) -> None:
    # 200 calls' connects while the controller's loop is held up (as on a machine whose
    # cores are taken): the kernel's queue must take them all, or Asterisk gives up on the
    # rest after 2 s and its fail-safe answers them without the controller's decision.
    srv, port, _ = server
    socks, connected = connect_as_asterisk(port, 200)
    try:
        assert connected == 200
        # The loop runs again: each connection is a session the server serves.
        for s in socks:
            s.setblocking(True)
            s.sendall(HEADERS.replace(b"inbound", AGI_DOCTOR.encode()))
        replies = await asyncio.gather(*(asyncio.to_thread(s.recv, 100) for s in socks))
        assert set(replies) == {AGI_DOCTOR_REPLY.encode() + b"\n"}
        assert srv.sessions == 200
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("answer", [b"200 result=1\n", b"510 Invalid or unknown command\n"])
async def test_a_decision_ends_our_side_so_asterisk_goes_on_without_waiting_for_us(
        answer: bytes) -> None:
    """The decision is the session's last word: its command comes with the end of our side
    of the connection, which ends the AGI as soon as Asterisk has set the variable (it reads
    the end next), with no wait for us to read its answer and close.  The answer is still
    read: a refusal drops the session as before."""
    answered = asyncio.Event()
    outcome: list[str] = []

    async def inbound(request: AgiRequest, session: AgiSession) -> None:
        try:
            await session.conclude("BACKLINE_DECISION", "announce^^^^^^^^")
            outcome.append("set")
        except AgiProtocolError:
            outcome.append("refused")
            raise
        finally:
            answered.set()

    srv = FastAgiServer({"inbound": inbound})
    port = await srv.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEADERS)
    await writer.drain()
    # The command, then the end of the stream, before Asterisk has answered anything.
    assert await asyncio.wait_for(reader.read(), 5) == \
        b'SET VARIABLE BACKLINE_DECISION "announce^^^^^^^^"\n'
    assert not answered.is_set()
    writer.write(answer)
    await writer.drain()
    writer.write_eof()  # Asterisk ends the AGI at our end, and closes
    await asyncio.wait_for(answered.wait(), 5)
    assert outcome == (["set"] if answer.startswith(b"200") else ["refused"])
    assert srv.failures == (0 if answer.startswith(b"200") else 1)
    writer.close()
    await srv.stop()
