"""A FreeSWITCH Event Socket for tests, speaking mod_event_socket's bytes exactly.

Both modes of mod_event_socket.c (signalwire/freeswitch, ``src/mod/event_handlers/
mod_event_socket/``; the copy read was commit 5a650e4c) are here:

* inbound: :class:`EslServer` listens on 127.0.0.1, port 0, greets with ``auth/request``
  and answers ``auth``/``api``/``bgapi``/``event``/``filter``/``sendmsg``/``exit``...;
* outbound: :meth:`EslServer.dial` connects *out* to a socket application, as the ``socket``
  dialplan application does, and waits for ``connect``.

Everything a peer sends is recorded (:class:`ReceivedCommand`, with its raw bytes) and
everything the server writes is kept per connection (:attr:`EslConnection.sent`), so tests
can assert on both. ``api``/``bgapi`` answers are scripted with :meth:`EslServer.script_api`.

The output side is written here from mod_event_socket's format strings, *not* with
``backline.pbx.freeswitch.wire``: the codec under test and this server must not share a bug.
The comments name the C function each format comes from.

Misbehaviour on demand, for the driver's failure paths: :class:`RawReply` (any bytes instead
of the frame a command would produce: wrong Content-Length, bad URL encoding, a 1 MB
header...), :meth:`EslConnection.send_raw`, :meth:`EslConnection.send_then_close` (a body
cut short, then close), :meth:`EslConnection.drop` (a sudden disconnect, no notice),
``greet=False`` (accept and say nothing, as a hung FreeSWITCH does) and ``reject=True``
(the ACL's ``text/rude-rejection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import re
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Final, TypeAlias, TypeVar

T = TypeVar("T")

# --------------------------------------------------------------------------- byte formats

# switch_utils.c, switch_url_encode: bytes below ' ', above '~', or in this set become %XX
# (upper-case hex). '/' ',' '(' ')' '\'' '!' '*' '$' '-' '.' '_' '~' stay as they are.
_URL_UNSAFE: Final = frozenset(b'\r\n "#%&+:;<=>?@[\\]^`{|}')
# ... except a '%' already followed by two upper-case hex digits, left as it is
# (switch_url_encode_opt with double_encode false): "%41" is written "%41", read back "A".
_HEX: Final = frozenset(b"0123456789ABCDEF")

# mod_event_socket.c, listener_run: the message passed to send_disconnect at "done:".
GOODBYE: Final = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
# listener_run, ACL refusal.
ACCESS_DENIED: Final = b"Access Denied, go away.\n"
# parse_command gives up on a packet at 10 MiB (read_packet's max_len) ...
MAX_COMMAND_BYTES: Final = 10_485_760
# ... and v1.11.3 defines MAX_CONTENT_LENGTH (16 MiB) for command bodies; a bigger one ends
# the connection here (how FreeSWITCH itself reacts was not checked).
MAX_COMMAND_BODY: Final = 16 * 1024 * 1024
# listener_run reads the first packet (auth, or outbound's first command) with a 25 s limit.
FIRST_PACKET_TIMEOUT: Final = 25.0


def url_encode(value: str) -> str:
    """switch_url_encode, on the UTF-8 bytes of ``value``."""
    out: list[str] = []
    data = value.encode("utf-8")
    for i, byte in enumerate(data):
        if byte == 0x25 and i + 2 < len(data) and data[i + 1] in _HEX and data[i + 2] in _HEX:
            out.append("%")  # "e-p > 1": two more bytes after it, then both hex
        elif byte < 0x20 or byte > 0x7E or byte in _URL_UNSAFE:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def serialize_event(
    headers: Iterable[tuple[str, str]], body: bytes | None = None, *, encode: bool = True
) -> bytes:
    """switch_event.c, switch_event_serialize(event, &str, encode).

    ``name: value\\n`` per header, the value URL-encoded (``_undef_`` when that leaves it
    empty); then ``Content-Length: n\\n\\n`` and the body, or a single ``\\n`` when the body
    is absent or empty. ``encode=False`` writes values raw: a way to send bad encoding.
    """
    parts: list[bytes] = []
    for name, value in headers:
        text = url_encode(value) if encode else value
        parts.append(f"{name}: {text or '_undef_'}\n".encode())
    if body:
        parts.append(b"Content-Length: %d\n\n" % len(body) + body)
    else:
        parts.append(b"\n")
    return b"".join(parts)


def event_frame(serialized: bytes, *, content_length: int | None = None) -> bytes:
    """read_packet's envelope: ``Content-Length: %d\\nContent-Type: text/event-%s\\n\\n``.

    ``content_length`` overrides the true length (a lying peer).
    """
    length = len(serialized) if content_length is None else content_length
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % length + serialized


def command_reply(text: str) -> bytes:
    """listener_run: ``Content-Type: command/reply\\nReply-Text: %s\\n\\n``."""
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def api_response(body: bytes, *, content_length: int | None = None) -> bytes:
    """api_exec: ``Content-Type: api/response\\nContent-Length: %d\\n\\n`` then the output."""
    length = len(body) if content_length is None else content_length
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % length + body


def disconnect_notice(message: bytes = GOODBYE, session_uuid: str | None = None) -> bytes:
    """send_disconnect: the session form names the channel and says ``disconnect``."""
    if session_uuid is None:
        head = b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(message)
    else:
        head = (
            b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: %s\n"
            b"Content-Disposition: disconnect\nContent-Length: %d\n\n"
            % (session_uuid.encode(), len(message))
        )
    return head + message


def linger_notice(session_uuid: str, channel_name: str, linger_seconds: int) -> bytes:
    """read_packet, channel down with LFLAG_LINGER set: raw Channel-Name, Content-Length 0."""
    return (
        f"Content-Type: text/disconnect-notice\nControlled-Session-UUID: {session_uuid}\n"
        f"Content-Disposition: linger\nChannel-Name: {channel_name}\n"
        f"Linger-Time: {linger_seconds}\nContent-Length: 0\n\n"
    ).encode()


def huge_header_frame(size: int = 1_000_000) -> bytes:
    """A command/reply whose one header line is ``size`` bytes long (a DoS probe)."""
    return b"Content-Type: command/reply\nReply-Text: +OK " + b"x" * size + b"\n\n"


# switch_event.c EVENT_NAMES (the copy read), in enum order; ALL last.
EVENT_NAMES: Final = (
    "CUSTOM", "CLONE", "CHANNEL_CREATE", "CHANNEL_DESTROY", "CHANNEL_STATE",
    "CHANNEL_CALLSTATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HOLD", "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_UNPARK", "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE", "CHANNEL_UUID", "API", "LOG", "INBOUND_CHAN", "OUTBOUND_CHAN",
    "STARTUP", "SHUTDOWN", "PUBLISH", "UNPUBLISH", "TALK", "NOTALK", "SESSION_CRASH",
    "MODULE_LOAD", "MODULE_UNLOAD", "DTMF", "MESSAGE", "PRESENCE_IN", "NOTIFY_IN",
    "PRESENCE_OUT", "PRESENCE_PROBE", "MESSAGE_WAITING", "MESSAGE_QUERY", "ROSTER", "CODEC",
    "BACKGROUND_JOB", "DETECTED_SPEECH", "DETECTED_TONE", "PRIVATE_COMMAND", "HEARTBEAT",
    "TRAP", "ADD_SCHEDULE", "DEL_SCHEDULE", "EXE_SCHEDULE", "RE_SCHEDULE", "RELOADXML",
    "NOTIFY", "PHONE_FEATURE", "PHONE_FEATURE_SUBSCRIBE", "SEND_MESSAGE", "RECV_MESSAGE",
    "REQUEST_PARAMS", "CHANNEL_DATA", "GENERAL", "COMMAND", "SESSION_HEARTBEAT",
    "CLIENT_DISCONNECTED", "SERVER_DISCONNECTED", "SEND_INFO", "RECV_INFO", "RECV_RTCP_MESSAGE",
    "CALL_SECURE", "NAT", "RECORD_START", "RECORD_STOP", "PLAYBACK_START", "PLAYBACK_STOP",
    "CALL_UPDATE", "FAILURE", "SOCKET_DATA", "MEDIA_BUG_START", "MEDIA_BUG_STOP",
    "CONFERENCE_DATA_QUERY", "CONFERENCE_DATA", "CALL_SETUP_REQ", "CALL_SETUP_RESULT",
    "CALL_DETAIL", "DEVICE_STATE", "REAL_TIME_TEXT", "ALL",
)
_EVENT_SET: Final = frozenset(EVENT_NAMES)

# parse_command, "myevents": the channel events a myevents socket is subscribed to.
MYEVENTS: Final = frozenset(
    (
        "CHANNEL_ANSWER", "CHANNEL_APPLICATION", "CHANNEL_BRIDGE", "CHANNEL_CREATE",
        "CHANNEL_DATA", "CHANNEL_DESTROY", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_ORIGINATE", "CHANNEL_UUID",
        "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_STATE", "CHANNEL_UNBRIDGE", "CHANNEL_UNPARK", "DETECTED_SPEECH", "DTMF",
        "NOTALK", "TALK",
    )
)

_LOG_LEVELS: Final = {
    "console": 0, "alert": 1, "crit": 2, "err": 3, "error": 3,
    "warning": 4, "notice": 5, "info": 6, "debug": 7,
}  # fmt: skip


def name_event(name: str) -> str | None:
    """switch_name_event: case-insensitive, and ``SWITCH_EVENT_`` (13 chars) may prefix it."""
    upper = name.upper()
    if upper in _EVENT_SET:
        return upper
    if len(upper) > 13 and upper[13:] in _EVENT_SET:
        return upper[13:]
    return None


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """One packet a peer sent, as read_packet splits it.

    ``command`` is the first line; ``headers`` the ``name: value`` lines after it (lines
    without a colon are dropped, as read_packet drops them); ``body`` the Content-Length
    bytes if any; ``raw`` every byte of the packet, so a test can check framing exactly.
    """

    connection: int
    command: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    raw: bytes

    def get(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class RawReply:
    """Bytes written verbatim instead of the frame a scripted api/bgapi would produce.

    For ``api`` they replace the api/response; for ``bgapi`` the BACKGROUND_JOB event frame
    (written to the connection that ran the bgapi, subscribed or not). ``close`` closes the
    socket right after: with a frame cut short, that is "truncated body then close".
    """

    data: bytes
    close: bool = False


ApiOutput: TypeAlias = str | bytes | RawReply
ApiHandler: TypeAlias = Callable[[str | None], ApiOutput | Awaitable[ApiOutput]]


@dataclass
class Channel:
    """A call leg the fake switch knows: what ``connect`` and channel events describe."""

    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    name: str = "sofia/internal/1001@127.0.0.1"
    caller_id_name: str = "1001"
    caller_id_number: str = "1001"
    destination_number: str = "100"
    context: str = "default"
    direction: str = "inbound"
    state: str = "CS_EXECUTE"
    call_state: str = "RINGING"
    answer_state: str = "ringing"
    variables: dict[str, str] = field(default_factory=dict)
    up: bool = True
    hangup_cause: str = ""  # set when it goes down, reported again when the hangup completes

    def all_variables(self) -> dict[str, str]:
        variables = {"uuid": self.uuid, "call_uuid": self.uuid, "channel_name": self.name}
        variables.update(self.variables)
        return variables

    def event_headers(self) -> list[tuple[str, str]]:
        """A representative subset of switch_channel_event_set_data's headers, in its order:
        channel state, ``Unique-ID``, the caller profile as ``Caller-*``, then every
        ``variable_*``. Every event this server fires for a channel (CHANNEL_DATA,
        CHANNEL_EXECUTE, _EXECUTE_COMPLETE, _ANSWER, _HANGUP, _HANGUP_COMPLETE) is one that
        switch_channel_event_set_extended_data (src/switch_channel.c) gives the variables
        without ``verbose_events``."""
        headers = [
            ("Channel-State", self.state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", "4" if self.state == "CS_EXECUTE" else "10"),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", self.direction),
            ("Presence-Call-Direction", self.direction),
            ("Channel-Call-UUID", self.uuid),
            ("Answer-State", self.answer_state),
            ("Caller-Direction", self.direction),
            ("Caller-Username", self.caller_id_number),
            ("Caller-Dialplan", "XML"),
            ("Caller-Caller-ID-Name", self.caller_id_name),
            ("Caller-Caller-ID-Number", self.caller_id_number),
            ("Caller-Destination-Number", self.destination_number),
            ("Caller-Unique-ID", self.uuid),
            ("Caller-Context", self.context),
            ("Caller-Channel-Name", self.name),
        ]
        headers += [(f"variable_{key}", value) for key, value in self.all_variables().items()]
        return headers


# --------------------------------------------------------------------------- connection


class EslConnection:
    """One Event Socket listener (``listener_t``): its flags, subscriptions and bytes."""

    def __init__(
        self,
        server: EslServer,
        ident: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        session: Channel | None = None,
        async_mode: bool = True,
        full: bool = False,
    ) -> None:
        self.server = server
        self.id = ident
        self._reader = reader
        self._writer = writer
        self._inbuf = bytearray()
        self.session = session
        self.outbound = session is not None
        self.async_mode = async_mode
        self.full = full
        self.authed = self.outbound  # socket_function sets LFLAG_AUTHED
        self.running = True
        self.connected = False  # LFLAG_CONNECTED, set by "connect"
        self.format = "plain"
        self.events = False
        self.event_all = False
        self.event_names: set[str] = set()
        self.subclasses: set[str] = set()
        self.myevents = False
        self.myevents_uuid: str | None = None
        self.filters: list[tuple[str, str]] = []
        self.linger = False
        self.linger_seconds = -1
        self.logging: int | None = None
        self.divert = False
        self.commands: list[ReceivedCommand] = []
        self.sent = bytearray()
        self.closed = asyncio.Event()
        self._busy = False
        self._held: list[bytes] = []
        self._linger_task: asyncio.Task[None] | None = None

    # -- writing

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` as is, now (even mid-command: this is for misbehaving)."""
        if self._writer.is_closing():
            return
        self.sent += data
        self._writer.write(data)

    def _send_frame(self, data: bytes) -> None:
        # Events wait while a command is being handled: read_packet only flushes the event
        # queue between packets, so a reply is never preceded by an event that came later.
        if self._busy:
            self._held.append(data)
        else:
            self.send_raw(data)

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        for data in held:
            self.send_raw(data)

    async def send_then_close(self, data: bytes) -> None:
        """Write ``data`` (e.g. a frame cut short of its Content-Length) and close cleanly."""
        self.send_raw(data)
        await self._close_socket()

    def drop(self) -> None:
        """A sudden disconnect: no notice, the socket is aborted (RST where the OS allows)."""
        self.running = False
        self._writer.transport.abort()
        self._writer.close()
        self.closed.set()
        self.server._notify()

    async def disconnect(self, message: bytes = GOODBYE) -> None:
        """What FreeSWITCH does when it ends a listener: disconnect notice, then close."""
        self.running = False
        self.send_raw(disconnect_notice(message, self.session.uuid if self.session else None))
        await self._close_socket()

    async def _close_socket(self) -> None:
        self.running = False
        if not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()
            self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        self.closed.set()
        self.server._notify()

    # -- reading (read_packet)

    async def _read_packet(self) -> ReceivedCommand | None:
        """One packet, split as read_packet does; None when the peer closed."""
        buf = self._inbuf
        while True:
            # "bah": CR/LF before a packet are skipped.
            skip = 0
            while skip < len(buf) and buf[skip] in b"\r\n":
                skip += 1
            del buf[:skip]
            end = _packet_end(buf)
            if end is not None:
                break
            data = await self._reader.read(65536)
            if not data:
                return None
            buf += data
        block = bytes(buf[:end])
        del buf[:end]
        lines = [line for line in re.split(rb"[\r\n]+", block) if line]
        command = lines[0].decode("utf-8", "replace") if lines else ""
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if colon:
                headers.append((name.decode("utf-8", "replace"),
                                value.lstrip(b" ").decode("utf-8", "replace")))  # fmt: skip
        body = b""
        length = _atoi(_first(headers, "content-length") or "")
        if length > MAX_COMMAND_BODY:
            return None  # see MAX_COMMAND_BODY
        if length > 0:
            while len(buf) < length:
                data = await self._reader.read(65536)
                if not data:
                    return None
                buf += data
            body = bytes(buf[:length])
            del buf[:length]
        return ReceivedCommand(self.id, command, tuple(headers), body, block + body)

    # -- event delivery (event_handler)

    def wants(self, name: str, subclass: str | None, headers: Sequence[tuple[str, str]]) -> bool:
        """mod_event_socket.c event_handler: subscription, then filters, then myevents."""
        if not self.events:
            return False
        send = self.event_all or (
            name in self.event_names
            and (name != "CUSTOM" or subclass is None or subclass in self.subclasses)
        )
        if send and self.filters:
            send = _filters_pass(self.filters, headers)
        if send and self.myevents:
            unique_id = _first(headers, "unique-id")
            mine = self.session.uuid if self.session else self.myevents_uuid
            if unique_id is None or (mine is not None and unique_id != mine):
                send = False
        return send

    def deliver(self, serialized: bytes) -> None:
        if self.format != "plain":
            raise NotImplementedError(f"only plain events are serialized here, not {self.format}")
        self._send_frame(event_frame(serialized))

    # -- sessions (outbound) --------------------------------------------------

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """The caller hangs up: channel events, then linger notice or disconnect."""
        if self.session is None or not self.session.up:
            return
        await self.server.hangup_channel(self.session, cause)

    def _channel_down(self) -> None:
        # read_packet: on channel down, either the linger notice (and the socket stays until
        # Linger-Time passes, or forever for -1) or the end of the listener.
        assert self.session is not None
        if self.linger:
            notice = linger_notice(self.session.uuid, self.session.name, self.linger_seconds)
            self._send_frame(notice)
            if self.linger_seconds != -1:
                self._linger_task = asyncio.create_task(self._linger_then_close())
        else:
            self.running = False
            self.server._spawn(self._finish())

    async def _linger_then_close(self) -> None:
        await asyncio.sleep(self.linger_seconds)  # FreeSWITCH's own linger timer
        self.running = False
        await self._finish()

    async def _finish(self) -> None:
        if not self.closed.is_set():
            await self.disconnect()


# --------------------------------------------------------------------------- server


class EslServer:
    """mod_event_socket in a test: an inbound listener plus outbound ``dial``.

    ``clock`` stands in for FreeSWITCH's time stamps (Event-Date-*), so a test can ask for
    byte-exact events. ``auth_timeout`` mirrors the 25 s read_packet limit on the first
    packet (None: wait forever).
    """

    def __init__(
        self,
        password: str = "ClueCon",
        *,
        greet: bool = True,
        reject: bool = False,
        auth_timeout: float | None = FIRST_PACKET_TIMEOUT,
        core_uuid: str = "6ddf010e-bc0b-4366-8413-6becd7f77076",
        hostname: str = "backline-test",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.password = password
        self.greet = greet
        self.reject = reject
        self.auth_timeout = auth_timeout
        self.core_uuid = core_uuid
        self.hostname = hostname
        self.clock = clock
        self.connections: list[EslConnection] = []
        self.commands: list[ReceivedCommand] = []
        self.channels: dict[str, Channel] = {}
        # The switch's own event handlers (switch_event_bind): each fired event is handed to
        # them as well as to the ESL listeners, as mod_sofia's presence handler gets them.
        self.bindings: list[Callable[[str, Sequence[tuple[str, str]]], None]] = []
        self._api: dict[str, ApiHandler] = {}
        self._ids = itertools.count(1)
        self._sequence = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tick = asyncio.Event()
        self.host = "127.0.0.1"
        self.port = 0

    async def __aenter__(self) -> EslServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in self.connections:
            conn.running = False
            if not conn.closed.is_set():
                conn._writer.transport.abort()
                conn.closed.set()
            conn._writer.close()
        # Reads now see EOF and the listener tasks end on their own; what is left waits on a
        # test's gate (an api handler never released) and is cancelled.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- scripting

    def script_api(self, command: str, reply: ApiOutput | ApiHandler) -> None:
        """How ``api``/``bgapi <command> ...`` answers: text, bytes, RawReply, or a callable
        of the argument string (None when there is none), sync or async."""
        if callable(reply):
            self._api[command] = reply
        else:
            fixed = reply
            self._api[command] = lambda arg: fixed

    def add_channel(self, channel: Channel) -> Channel:
        """Make a channel known (so ``sendmsg <uuid>`` and ``myevents <uuid>`` find it)."""
        self.channels[channel.uuid] = channel
        return channel

    # -- waiting (never sleeping)

    def _notify(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def wait_for(self, probe: Callable[[], T | None], within: float = 30.0) -> T:
        """Wait until ``probe()`` returns something other than None, and return it."""
        async with asyncio.timeout(within):
            while True:
                tick = self._tick
                result = probe()
                if result is not None:
                    return result
                await tick.wait()

    async def wait_connection(self, number: int = 1, within: float = 30.0) -> EslConnection:
        """The ``number``-th connection (1-based), once it exists."""

        def probe() -> EslConnection | None:
            return self.connections[number - 1] if len(self.connections) >= number else None

        return await self.wait_for(probe, within)

    async def wait_command(
        self, prefix: str, *, nth: int = 1, within: float = 30.0
    ) -> ReceivedCommand:
        """The ``nth`` received command whose first line starts with ``prefix``."""

        def probe() -> ReceivedCommand | None:
            found = [c for c in self.commands if c.command.startswith(prefix)]
            return found[nth - 1] if len(found) >= nth else None

        return await self.wait_for(probe, within)

    # -- events

    def fire_event(
        self,
        name: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        *,
        subclass: str | None = None,
        calling: tuple[str, str, int] = ("switch_event.c", "switch_event_fire", 1),
    ) -> bytes:
        """switch_event_create + headers + switch_event_fire: deliver to every listener that
        wants it, serialized once per event. Returns the serialized event."""
        all_headers = self._core_headers(name, calling)
        if subclass is not None:
            all_headers.append(("Event-Subclass", subclass))
        all_headers += list(headers)
        serialized = serialize_event(all_headers, body)
        for conn in self.connections:
            if conn.running and conn.wants(name, subclass, all_headers):
                conn.deliver(serialized)
        for handler in list(self.bindings):
            handler(name, all_headers)
        return serialized

    def _core_headers(self, name: str, calling: tuple[str, str, int]) -> list[tuple[str, str]]:
        # switch_event.c, switch_event_prep_for_delivery_detailed (run by switch_event_create).
        now = self.clock()
        micros = int(now * 1_000_000)
        return [
            ("Event-Name", name),
            ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.hostname),
            ("FreeSWITCH-Switchname", self.hostname),
            ("FreeSWITCH-IPv4", "127.0.0.1"),
            ("FreeSWITCH-IPv6", "::1"),
            ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))),
            ("Event-Date-GMT", formatdate(now, usegmt=True)),
            ("Event-Date-Timestamp", str(micros)),
            ("Event-Calling-File", calling[0]),
            ("Event-Calling-Function", calling[1]),
            ("Event-Calling-Line-Number", str(calling[2])),
            ("Event-Sequence", str(next(self._sequence))),
        ]

    def fire_channel_event(
        self, channel: Channel, name: str, extra: Iterable[tuple[str, str]] = ()
    ) -> bytes:
        """A channel event: the event's own headers, then the channel's data."""
        return self.fire_event(name, [*extra, *channel.event_headers()])

    async def hangup_channel(self, channel: Channel, cause: str = "NORMAL_CLEARING") -> None:
        """Hang a channel up: CHANNEL_HANGUP, CHANNEL_HANGUP_COMPLETE, then each outbound
        socket controlling it reacts to the channel going down."""
        if not channel.up:
            return
        self.hang_up(channel, cause)
        self.hangup_complete(channel)

    def hang_up(self, channel: Channel, cause: str = "NORMAL_CLEARING") -> None:
        """The channel goes down (switch_channel.c, switch_channel_perform_hangup):
        CHANNEL_HANGUP at once, while the application it runs may still be finishing;
        :meth:`hangup_complete` follows once it has returned."""
        if not channel.up:
            return
        channel.up, channel.hangup_cause = False, cause
        channel.state, channel.call_state, channel.answer_state = "CS_HANGUP", "HANGUP", "hangup"
        self.fire_channel_event(channel, "CHANNEL_HANGUP", [("Hangup-Cause", cause)])

    def hangup_complete(self, channel: Channel) -> None:
        """The reporting state (switch_core_state_machine.c): CHANNEL_HANGUP_COMPLETE with
        the channel's variables as they are now, then each outbound socket controlling it
        reacts to the channel going down."""
        if channel.state != "CS_HANGUP":
            return
        channel.state = "CS_REPORTING"
        self.fire_channel_event(channel, "CHANNEL_HANGUP_COMPLETE",
                                [("Hangup-Cause", channel.hangup_cause)])
        for conn in self.connections:
            if conn.session is channel and conn.running:
                conn._channel_down()

    # -- connections

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = EslConnection(self, next(self._ids), reader, writer)
        self.connections.append(conn)
        self._notify()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(conn)
        except asyncio.CancelledError:
            # close() cancels listener tasks; this is the top of the connection's task, and
            # asyncio's start_server would log a cancelled handler as an error.
            pass
        finally:
            self._tasks.discard(task)

    async def dial(
        self,
        host: str,
        port: int,
        channel: Channel | None = None,
        *,
        async_mode: bool = True,
        full: bool = False,
        first_packet_timeout: float | None = FIRST_PACKET_TIMEOUT,
    ) -> EslConnection:
        """The ``socket`` application: connect out to ``host:port`` for ``channel``
        (``<action application="socket" data="host:port [async] [full]"/>``)."""
        channel = self.add_channel(channel or Channel())
        channel.variables.setdefault("socket_host", host)
        reader, writer = await asyncio.open_connection(host, port)
        conn = EslConnection(
            self, next(self._ids), reader, writer, session=channel, async_mode=async_mode, full=full
        )
        self.connections.append(conn)
        self._notify()
        self._spawn(self._serve(conn, first_packet_timeout))
        return conn

    async def _serve(self, conn: EslConnection, first_timeout: float | None = None) -> None:
        """listener_run."""
        try:
            if conn.outbound:
                # The first command's reply is computed and then never written (listener_run
                # calls parse_command but has no send after it); "connect" writes its own.
                packet = await _with_timeout(conn._read_packet(), first_timeout)
                if packet is None:
                    return
                await self._handle(conn, packet, send_reply=False)
            else:
                if self.reject:
                    # The ACL branch writes this, then "goto done": the goodbye notice follows.
                    head = b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n"
                    conn.send_raw(head % len(ACCESS_DENIED) + ACCESS_DENIED)
                    return
                if not self.greet:
                    # A switch that accepts and never speaks (greenswitch waits forever).
                    while await conn._reader.read(65536):
                        pass
                    await conn._close_socket()
                    return
                conn.send_raw(b"Content-Type: auth/request\n\n")
                packet = await _with_timeout(conn._read_packet(), self.auth_timeout)
                if packet is None:
                    return
                await self._handle(conn, packet)
            while conn.running:
                packet = await conn._read_packet()
                if packet is None:
                    conn.running = False
                    break
                await self._handle(conn, packet)
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.running = False
        finally:
            if conn._linger_task is not None:
                conn._linger_task.cancel()
            if not conn.closed.is_set():
                # listener_run "done:": the goodbye notice if the socket is still there.
                with contextlib.suppress(ConnectionError):
                    await conn.disconnect()
            self._notify()

    # -- parse_command ----------------------------------------------------------

    async def _handle(
        self, conn: EslConnection, packet: ReceivedCommand, *, send_reply: bool = True
    ) -> None:
        conn.commands.append(packet)
        self.commands.append(packet)
        self._notify()
        conn._busy = True
        try:
            reply = await self._parse_command(conn, packet)
            if reply is not None and send_reply:
                if not reply:
                    reply = "-ERR command not found"  # parse_command "done:"
                if reply.startswith("~"):
                    # listener_run: "~" means the rest follows Content-Type as is.
                    conn.send_raw(b"Content-Type: command/reply\n" + reply[1:].encode())
                else:
                    conn.send_raw(command_reply(reply))
        finally:
            conn._busy = False
            conn._flush_held()
            self._notify()

    async def _parse_command(self, conn: EslConnection, packet: ReceivedCommand) -> str | None:
        """mod_event_socket.c parse_command. Returns the reply text ("" becomes ``-ERR command
        not found``), a ``~``-prefixed raw header block, or None when the command wrote its own
        answer (api, bgapi, connect)."""
        cmd = packet.command
        low = cmd.lower()
        if low.startswith("exit") or cmd.startswith("..."):
            conn.running = False
            return "+OK bye"
        if not conn.authed:
            if low.startswith("auth "):
                if cmd[5:] == self.password:
                    conn.authed = True
                    return "+OK accepted"
                conn.running = False
                return "-ERR invalid"
            if low.startswith("userauth "):
                conn.running = False  # no user directory here: every userauth fails
                return "-ERR invalid"
            return ""
        if low.startswith("filter "):
            return _filter_command(conn, cmd[7:])
        if conn.session is not None and low.startswith("resume"):
            return "+OK"
        if conn.session is not None or low.startswith("myevents "):
            if low.startswith("connect"):
                self._connect(conn)
                return None
            if low.startswith("getvar"):
                _, _, name = cmd.partition(" ")
                return conn.session.all_variables().get(name, "") if conn.session else ""
            if low.startswith("myevents"):
                return self._myevents(conn, cmd)
        if low.startswith("divert_events"):
            if conn.session is None:
                return "-ERR not controlling a session."
            onoff = cmd[13:].strip(" ")
            if not onoff:
                return "-ERR missing value."
            conn.divert = onoff.lower() == "on"
            return "+OK events diverted" if conn.divert else "+OK events not diverted"
        if low.startswith("sendmsg"):
            return await self._sendmsg(conn, packet)
        if conn.outbound and not conn.full:
            return ""  # the OUTBOUND && !FULL early "goto done": api, event, linger... refused
        if low.startswith("sendevent"):
            return self._sendevent(packet)
        if low.startswith("api "):
            await self._api_command(conn, cmd[4:])
            return None
        if low.startswith("bgapi "):
            return self._bgapi_command(conn, packet)
        if low.startswith("log"):
            level_s = cmd[4:] if len(cmd) > 3 else ""
            level = _LOG_LEVELS.get(level_s.lower()) if not level_s.isdigit() else int(level_s)
            if level_s and level is None:
                return "-ERR invalid log level"
            conn.logging = 7 if level is None else level
            return f"+OK log level {level_s} [{conn.logging}]"
        if low.startswith("linger"):
            if conn.session is None:
                return "-ERR not controlling a session"
            rest = cmd[6:]
            conn.linger = True
            conn.linger_seconds = _atoi(rest[1:]) if rest.startswith(" ") and rest[1:] else -1
            if conn.linger_seconds != -1:
                return f"+OK will linger {conn.linger_seconds} seconds"
            return "+OK will linger"
        if low.startswith("nolinger"):
            if conn.session is None:
                return "-ERR not controlling a session"
            conn.linger = False
            return "+OK will not linger"
        if low.startswith("nolog"):
            if conn.logging is None:
                return "-ERR not loging"  # sic, parse_command
            conn.logging = None
            return "+OK no longer logging"
        if low.startswith("event"):
            return _event_command(conn, cmd)
        if low.startswith("nixevent"):
            return _nixevent_command(conn, cmd)
        if low.startswith("noevents"):
            if not conn.events:
                return "-ERR not listening for events"
            conn.events, conn.event_all = False, False
            conn.event_names.clear()
            conn.subclasses.clear()
            return "+OK no longer listening for events"
        return ""

    def _connect(self, conn: EslConnection) -> None:
        # parse_command "connect": a CHANNEL_DATA event with the channel's data, then its own
        # Content-Type/Reply-Text/Socket-Mode/Control headers, serialized with no envelope.
        assert conn.session is not None
        conn.connected = True
        headers = self._core_headers("CHANNEL_DATA", ("mod_event_socket.c", "parse_command", 1))
        headers += conn.session.event_headers()
        headers += [
            ("Content-Type", "command/reply"),
            ("Reply-Text", "+OK\n"),
            ("Socket-Mode", "async" if conn.async_mode else "static"),
            ("Control", "full" if conn.full else "single-channel"),
        ]
        conn.send_raw(serialize_event(headers))

    def _myevents(self, conn: EslConnection, cmd: str) -> str:
        if conn.myevents:
            return "-ERR aready enabled."  # sic, parse_command
        if conn.session is None:
            uuid, _, fmt = cmd[9:].partition(" ")
            if uuid in self.channels:
                conn.myevents_uuid = uuid
            elif fmt:
                return "-ERR invalid uuid"
            # else: FreeSWITCH goes on with no session, so the uuid filter never applies and
            # every channel event with a Unique-ID passes (event_handler's "l->session &&").
            if fmt.lower() in ("plain", "xml", "json"):
                conn.format = fmt.lower()
        conn.event_names |= MYEVENTS
        conn.myevents = True
        conn.events = True
        if "xml" in cmd or "XML" in cmd:
            conn.format = "xml"
        if "json" in cmd or "JSON" in cmd:
            conn.format = "json"
        return "+OK Events Enabled"

    async def _sendmsg(self, conn: EslConnection, packet: ReceivedCommand) -> str:
        uuid = packet.command[7:].strip(" ") or packet.get("session-id") or ""
        if conn.session is not None and uuid == conn.session.uuid:
            uuid = ""
        if not uuid and conn.session is not None:
            channel: Channel | None = conn.session
        else:
            channel = self.channels.get(uuid) if uuid else None
            if channel is None:
                return f"-ERR invalid session id [{uuid}]"
        assert channel is not None
        if packet.get("call-command") == "execute":
            app = packet.get("execute-app-name") or ""
            arg = packet.get("execute-app-arg")
            if arg is None and packet.body:
                arg = packet.body.decode("utf-8", "replace")
            run = self._execute(channel, app, arg, packet.get("Event-UUID"))
            asynchronous = conn.async_mode or (packet.get("async") or "").lower() == "true"
            if asynchronous or conn.session is None:
                self._spawn(run)  # queued as a private event: "+OK" now, the app later
            else:
                await run  # switch_ivr_parse_event runs it before the reply
        elif packet.get("call-command") == "hangup":
            cause = packet.get("hangup-cause") or "NORMAL_CLEARING"
            self._spawn(self.hangup_channel(channel, cause))
        return "+OK"

    async def _execute(
        self, channel: Channel, app: str, arg: str | None, app_uuid: str | None
    ) -> None:
        """A dialplan application on ``channel``: CHANNEL_EXECUTE, its effect, _COMPLETE."""
        app_headers = [
            ("Application", app),
            ("Application-Data", arg or ""),
            ("Application-UUID", app_uuid or str(uuidlib.uuid4())),
        ]
        self.fire_channel_event(channel, "CHANNEL_EXECUTE", app_headers)
        if app == "answer":
            channel.call_state, channel.answer_state = "ACTIVE", "answered"
            self.fire_channel_event(channel, "CHANNEL_ANSWER")
        channel.variables["current_application"] = app
        if arg is not None:
            channel.variables["current_application_data"] = arg
        self.fire_channel_event(
            channel, "CHANNEL_EXECUTE_COMPLETE", [*app_headers, ("Application-Response", "_none_")]
        )
        if app == "hangup":
            await self.hangup_channel(channel, arg or "NORMAL_CLEARING")

    def _sendevent(self, packet: ReceivedCommand) -> str:
        event_uuid = str(uuidlib.uuid4())
        name = name_event(packet.command[9:].strip(" \t")) or "CUSTOM"
        self.fire_event(
            name,
            [*packet.headers, ("Event-UUID", event_uuid)],
            packet.body or None,
            subclass=packet.get("Event-Subclass") if name == "CUSTOM" else None,
        )
        return f"+OK {event_uuid}"

    async def _run_api(self, command: str, arg: str | None) -> bytes | RawReply:
        handler = self._api.get(command)
        if handler is None:
            return f"-ERR {command} Command not found!\n".encode()  # api_exec
        result = handler(arg)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, str):
            return result.encode()
        return result

    async def _api_command(self, conn: EslConnection, rest: str) -> None:
        # api_exec, run in the listener's own thread: nothing else is written meanwhile.
        command, space, arg = rest.partition(" ")
        output = await self._run_api(command, arg if space else None)
        if isinstance(output, RawReply):
            conn.send_raw(output.data)
            if output.close:
                await conn.send_then_close(b"")
            return
        conn.send_raw(api_response(output or b"-ERR no reply\n"))

    def _bgapi_command(self, conn: EslConnection, packet: ReceivedCommand) -> str:
        command, space, arg = packet.command[6:].partition(" ")
        # switch_copy_string into a 37-byte buffer: a longer Job-UUID is cut to 36 chars.
        job_uuid = (packet.get("job-uuid") or str(uuidlib.uuid4()))[:36]
        self._spawn(self._background_job(conn, job_uuid, command, arg if space else None))
        return f"~Reply-Text: +OK Job-UUID: {job_uuid}\nJob-UUID: {job_uuid}\n\n"

    async def _background_job(
        self, conn: EslConnection, job_uuid: str, command: str, arg: str | None
    ) -> None:
        output = await self._run_api(command, arg)
        # This task first runs after _handle has written the +OK Job-UUID reply, as the job
        # thread's output comes after it in FreeSWITCH; fire_event holds the event while the
        # connection is busy with a later command.
        if isinstance(output, RawReply):
            conn.send_raw(output.data)
            if output.close:
                await conn.send_then_close(b"")
            return
        headers = [("Job-UUID", job_uuid), ("Job-Command", command)]
        if arg is not None:
            headers.append(("Job-Command-Arg", arg))
        self.fire_event(
            "BACKGROUND_JOB", headers, output, calling=("mod_event_socket.c", "api_exec", 1)
        )


# --------------------------------------------------------------------------- helpers


_PACKET_END: Final = re.compile(rb"\n\r*\n")


def _packet_end(buf: bytearray) -> int | None:
    """read_packet's end of packet: its ``crcount`` reaches 2 on two LF with only CR between
    them; a packet of 10 MiB (max_len) is cut there whatever it holds."""
    match = _PACKET_END.search(buf, 0, MAX_COMMAND_BYTES)
    if match is not None:
        return match.end()
    return MAX_COMMAND_BYTES if len(buf) >= MAX_COMMAND_BYTES else None


def _atoi(text: str) -> int:
    """C atoi: leading spaces, a sign, digits; anything else stops it."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


def _first(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def _with_timeout(coro: Awaitable[T], seconds: float | None) -> T | None:
    try:
        async with asyncio.timeout(seconds):
            return await coro
    except TimeoutError:
        return None


def _filters_pass(filters: Sequence[tuple[str, str]], headers: Sequence[tuple[str, str]]) -> bool:
    """event_handler's filter loop: "+"/plain values let matching events in, "-" keeps them out."""
    send = False
    for name, value in filters:
        actual = _first(headers, name.lower())
        if actual is None:
            continue
        positive = True
        comp = value
        while comp and comp[0] in "+- ":
            if comp[0] == "+":
                positive = True
            elif comp[0] == "-":
                positive = False
            comp = comp[1:]
        if send and positive:
            continue
        if value.startswith("/"):
            match = re.search(comp.strip("/"), actual) is not None
        else:
            match = actual.lower() == comp.lower()
        if match:
            if not positive:
                return False
            send = True
    return send


def _filter_command(conn: EslConnection, rest: str) -> str:
    name, space, value = rest.lstrip(" ").partition(" ")
    if name.lower() == "delete" and space:
        name, space, value = value.partition(" ")
        if name.lower() == "all":
            conn.filters.clear()
        else:
            conn.filters = [
                (n, v) for n, v in conn.filters
                if not (n.lower() == name.lower() and (not space or v == value))
            ]  # fmt: skip
        return f"+OK filter deleted. [{name}][{value if space else ''}]"
    if space:
        if name.lower() == "add":
            name, _, value = value.partition(" ")
        conn.filters.append((name, value))
        return f"+OK filter added. [{name}]=[{value}]"
    return "-ERR invalid syntax"


def _event_command(conn: EslConnection, cmd: str) -> str:
    _, space, rest = cmd.partition(" ")
    keys = 0
    custom = False
    if space:
        for count, token in enumerate(rest.split(" ")):
            if count == 0 and token.lower() in ("xml", "plain", "json"):
                conn.format = token.lower()
                continue
            if custom:
                conn.subclasses.add(token)
                continue
            name = name_event(token)
            if name is None:
                continue
            keys += 1
            if name == "ALL":
                conn.event_all = True
            conn.event_names.add(name)
            custom = custom or name == "CUSTOM"
    if not keys:
        return "-ERR no keywords supplied"
    conn.events = True
    return f"+OK event listener enabled {conn.format}"


def _nixevent_command(conn: EslConnection, cmd: str) -> str:
    _, space, rest = cmd.partition(" ")
    keys = 0
    custom = False
    for token in rest.split(" ") if space else ():
        if custom:
            conn.subclasses.discard(token)
            continue
        name = name_event(token)
        if name is None:
            continue
        keys += 1
        if name == "CUSTOM":
            custom = True
        elif name == "ALL":
            conn.event_all = False
            conn.event_names.clear()
        else:
            if conn.event_all:
                conn.event_all = False
                conn.event_names = set(EVENT_NAMES) - {"ALL"}
            conn.event_names.discard(name)
    if not keys:
        return "-ERR no keywords supplied"
    conn.events = True
    return "+OK events nixed"
