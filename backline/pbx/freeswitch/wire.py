"""Sans-IO codec for FreeSWITCH's Event Socket (mod_event_socket), in the style of h11.

Bytes from FreeSWITCH go into :meth:`Decoder.feed`, which returns :class:`Frame` values;
:func:`classify` turns a frame into one closed union of messages (:data:`Message`). Commands
going out are built by the encoder functions at the bottom, which return bytes and refuse any
argument that could break out of its line. Nothing here touches a socket, a clock or a loop.

Byte formats are taken from FreeSWITCH's source, not from client libraries. References name
the function in ``src/mod/event_handlers/mod_event_socket/mod_event_socket.c`` (signalwire/
freeswitch, the copy read was commit 5a650e4c), ``src/switch_event.c`` and
``src/switch_utils.c``:

* Every frame is a block of ``Name: value`` lines ended by an empty line; only a
  ``Content-Length`` header announces a body, of exactly that many bytes.
* Envelope headers are written raw by ``snprintf``: ``Content-Type: auth/request\\n\\n``
  (``listener_run``), ``Content-Type: command/reply\\nReply-Text: %s\\n\\n`` (``listener_run``),
  ``Content-Type: api/response\\nContent-Length: %d\\n\\n`` (``api_exec``), and for events
  ``Content-Length: %d\\nContent-Type: text/event-plain\\n\\n``: Content-Length *before*
  Content-Type (``read_packet``, the ``hbuf`` format).
* An event body is ``switch_event_serialize(..., encode=SWITCH_TRUE)``: each header as
  ``name: url-encoded value\\n`` (an empty encoded value is written ``_undef_``), then either a
  lone ``\\n``, or ``Content-Length: n\\n\\n`` and an n-byte event body.
* The outbound ``connect`` answer is *not* enveloped: ``parse_command`` serializes a
  CHANNEL_DATA event whose own headers include ``Content-Type: command/reply`` and
  ``Reply-Text: +OK\\n`` (so ``Reply-Text: %2BOK%0A`` on the wire), ``Socket-Mode`` and
  ``Control``. Its header values are therefore URL-encoded, unlike every other command/reply.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn, TypeAlias
from urllib.parse import unquote_to_bytes

# Sending, we refuse with backline.pbx.ports.UnsafeValue (the one "we will not send this"
# error of both drivers): a CR or LF would end the command line early and let the rest be
# read as a new header or a new command (injection); a NUL truncates the C string
# FreeSWITCH copies it into.
from backline.pbx.ports import UnsafeValue

# A header block larger than this is refused before its end is seen. The largest block
# FreeSWITCH sends is the outbound ``connect`` answer, which carries every channel variable
# URL-encoded (an SDP grows threefold): tens of KiB on a busy SIP channel, so 128 KiB leaves
# room while a 1 MB "header line" is still refused after buffering at most this much.
MAX_HEADER_BYTES: Final = 128 * 1024
# The same 16 MiB that mod_event_socket.c defines as MAX_CONTENT_LENGTH in v1.11.3 (seen
# in that release's header; not in the older copy read). api/response bodies, even ``show
# channels`` on a full box, stay far below it.
MAX_CONTENT_LENGTH: Final = 16 * 1024 * 1024
# Ten digits reach 16 MiB with room; more digits would only feed int() a huge string.
_MAX_LENGTH_DIGITS: Final = 10

Headers: TypeAlias = tuple[tuple[str, str], ...]


# --------------------------------------------------------------------------- errors


class EslError(Exception):
    """Base of every error raised by this module."""


class ProtocolError(EslError):
    """The peer (FreeSWITCH, or whatever is pretending to be it) broke the protocol.

    The connection is unusable after this: the decoder has lost its framing and stays
    broken, every later :meth:`Decoder.feed` raises again.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- frames


def header(headers: Headers, name: str) -> str | None:
    """The first value of ``name`` (case-insensitive, as ``switch_event_get_header``), or None."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Frame:
    """One envelope as it came off the wire.

    ``headers`` keep wire order and duplicates; values are *not* URL-decoded (envelope
    headers are written raw by FreeSWITCH, see the module docstring). ``body`` is exactly
    ``Content-Length`` bytes, or empty.
    """

    content_type: str
    headers: Headers
    body: bytes = b""

    def get(self, name: str) -> str | None:
        return header(self.headers, name)


_EVENT_ENVELOPE: Final = re.compile(
    rb"Content-Length: ([0-9]{1,10})\nContent-Type: text/event-plain\n\n")


class _State:
    HEADERS: Final = 0
    BODY: Final = 1
    BROKEN: Final = 2


class Decoder:
    """Turns the byte stream FreeSWITCH sends into :class:`Frame` values.

    ``feed`` accepts any split of the stream, down to one byte at a time, and returns the
    frames completed by that data (possibly none). Memory is bounded: a header block may not
    exceed ``max_header_bytes`` and a body may not announce more than ``max_content_length``;
    either raises :class:`ProtocolError` as soon as it is known, without waiting for the rest.

    Lenient where FreeSWITCH's own reader is (``read_packet``): empty lines before a frame
    are skipped, a ``\\r`` before ``\\n`` is dropped, spaces after the colon are dropped.
    Strict where leniency would hide a broken peer: a header line with no colon, a missing
    Content-Type, a Content-Length that is not plain decimal digits, or two that disagree.
    """

    def __init__(
        self,
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_content_length: int = MAX_CONTENT_LENGTH,
    ) -> None:
        self._max_header_bytes = max_header_bytes
        self._max_content_length = max_content_length
        self._buf = bytearray()
        self._pos = 0  # start of the next unread line (HEADERS) or of the body (BODY)
        self._scan = 0  # no newline before this offset: fed byte by byte, never rescan
        self._block_start = 0  # where the current frame began
        self._lines: list[tuple[str, str]] = []
        self._headers: Headers = ()
        self._content_type = ""
        self._need = 0
        self._state = _State.HEADERS
        self._error: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes held for a frame that is not complete yet (0 between frames)."""
        return len(self._buf) - self._block_start

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` and return every frame it completes, in order.

        Raises :class:`ProtocolError` if the stream breaks the protocol; frames completed by
        the same call before the break are lost with it (the link is dead anyway).
        """
        if self._error is not None:
            raise self._error
        self._buf += data
        frames: list[Frame] = []
        try:
            while True:
                frame = self._step()
                if frame is None:
                    break
                frames.append(frame)
        except ProtocolError as error:
            self._break(error)
            raise
        self._compact()
        return frames

    def eof(self) -> None:
        """The peer closed the connection. Raises :class:`ProtocolError` mid-frame.

        A frame cut short (headers without their end, or a body shorter than announced) is
        the "truncated body then close" case: the caller must not wait for the rest.
        """
        if self._error is not None:
            raise self._error
        if self._state == _State.BODY:
            got = len(self._buf) - self._pos
            self._fail(f"connection closed after {got} of {self._need} body bytes")
        if self._lines or self._buf[self._pos :].strip(b"\r\n"):
            self._fail("connection closed inside a header block")

    # -- internals

    def _fail(self, reason: str) -> NoReturn:
        error = ProtocolError(reason)
        self._break(error)
        raise error

    def _break(self, error: ProtocolError) -> None:
        # Framing is lost: free the buffer and remember why, for every later call.
        self._state = _State.BROKEN
        self._error = error
        self._buf.clear()
        self._pos = self._scan = self._block_start = self._need = 0
        self._lines = []

    def _compact(self) -> None:
        # Drop consumed bytes so the buffer only ever holds the unfinished frame.
        if self._block_start:
            del self._buf[: self._block_start]
            self._pos -= self._block_start
            self._scan = max(0, self._scan - self._block_start)
            self._block_start = 0

    def _step(self) -> Frame | None:
        if self._state == _State.HEADERS:
            return self._step_headers()
        if self._state == _State.BODY:
            return self._step_body()
        raise AssertionError("decoder used after a ProtocolError")  # pragma: no cover

    def _step_headers(self) -> Frame | None:
        buf = self._buf
        if not self._lines:
            # The envelope of nearly every frame on a busy link, exactly as read_packet's
            # ``hbuf`` writes it: read in one match instead of line by line (bench/esl.py).
            plain = _EVENT_ENVELOPE.match(buf, self._pos)
            if plain is not None:
                length = plain[1].decode("ascii")
                need = int(length)
                if need > self._max_content_length:
                    self._fail(f"Content-Length {length} exceeds the "
                               f"{self._max_content_length}-byte limit")
                start = plain.end()
                headers = (("Content-Length", length), ("Content-Type", "text/event-plain"))
                end = start + need
                if len(buf) >= end:  # the whole event is here: the frame at once
                    self._pos = self._block_start = end
                    return Frame("text/event-plain", headers, bytes(buf[start:end]))
                self._pos = start
                self._headers, self._content_type, self._need = headers, "text/event-plain", need
                self._state = _State.BODY
                return None
        while True:
            newline = buf.find(b"\n", max(self._pos, self._scan))
            if newline < 0:
                self._scan = len(buf)
                if len(buf) - self._block_start > self._max_header_bytes:
                    self._fail(f"header block exceeds {self._max_header_bytes} bytes")
                return None
            if newline + 1 - self._block_start > self._max_header_bytes:
                self._fail(f"header block exceeds {self._max_header_bytes} bytes")
            line = bytes(buf[self._pos : newline])
            self._pos = newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                self._lines.append(_split_header_line(line))
                continue
            if not self._lines:
                # read_packet skips CR/LF before a packet ("bah"); so do we.
                self._block_start = self._pos
                continue
            return self._end_of_headers()

    def _end_of_headers(self) -> Frame | None:
        headers = tuple(self._lines)
        content_type = header(headers, "Content-Type")
        if content_type is None:
            self._fail("frame without Content-Type")
        self._need = _content_length(headers, self._max_content_length)
        if self._need == 0:
            return self._finish(content_type, headers, b"")
        self._headers = headers
        self._content_type = content_type
        self._state = _State.BODY
        return self._step_body()

    def _step_body(self) -> Frame | None:
        end = self._pos + self._need
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[self._pos : end])
        self._pos = end
        self._state = _State.HEADERS
        return self._finish(self._content_type, self._headers, body)

    def _finish(self, content_type: str, headers: Headers, body: bytes) -> Frame:
        self._lines = []
        self._block_start = self._pos
        self._need = 0
        return Frame(content_type=content_type, headers=headers, body=body)


def _split_header_line(line: bytes) -> tuple[str, str]:
    colon = line.find(b":")
    if colon <= 0:
        raise ProtocolError(f"header line without a name and colon: {line[:80]!r}")
    name = line[:colon]
    # read_packet: ``while (*val == ' ') val++`` -- only spaces, only on the left.
    value = line[colon + 1 :].lstrip(b" ")
    return name.decode("utf-8", "replace"), value.decode("utf-8", "replace")


def _content_length(headers: Headers, limit: int) -> int:
    values = {value for key, value in headers if key.lower() == "content-length"}
    if not values:
        return 0
    if len(values) > 1:
        raise ProtocolError(f"conflicting Content-Length headers: {sorted(values)}")
    (text,) = values
    # FreeSWITCH uses atoi(), which reads "12abc" as 12 and "-5" as -5. A peer that sends
    # either has lost its framing; guessing a length would desynchronise us silently.
    if not text or not text.isascii() or not text.isdigit():
        raise ProtocolError(f"Content-Length is not a decimal byte count: {text[:40]!r}")
    if len(text) > _MAX_LENGTH_DIGITS or int(text) > limit:
        raise ProtocolError(f"Content-Length {text[:40]} exceeds the {limit}-byte limit")
    return int(text)


# --------------------------------------------------------------------------- URL decoding


def url_decode(raw: str) -> str:
    """Undo ``switch_url_encode`` on one header value.

    ``%XX`` with two hex digits becomes that byte; ``+`` stays ``+`` (it is not a space
    here: switch_url_encode writes a space as ``%20`` and ``+`` as ``%2B``). Bad encoding is
    kept verbatim: a ``%`` not followed by two hex digits is copied as is. That is what
    ``switch_url_decode`` does for ``%ZZ`` and for a ``%`` near the end, and it keeps a
    value readable instead of failing a whole event for one odd header. (FreeSWITCH encodes
    ``%`` as ``%25``, except one already followed by two upper-case hex digits, which
    switch_url_encode leaves as it is: a value holding ``%41`` reaches us as ``A``, so no
    decoded value is trusted to be the caller's bytes.) The bytes are then read as
    UTF-8, invalid sequences replaced by U+FFFD, so the result is deterministic.
    """
    if "%" not in raw:
        return raw
    # unquote_to_bytes has exactly these rules (a bad or short escape is kept verbatim, "+"
    # stays "+") and runs in C-speed slices: a byte-by-byte loop here cost 11 us a value,
    # most of an event's parse time (bench/esl.py).
    return unquote_to_bytes(raw.encode("utf-8", "surrogateescape")).decode("utf-8", "replace")


def _decode_value(raw: str) -> str:
    # switch_event_serialize writes an empty (encoded) value as "_undef_"; undo that.
    return "" if raw == "_undef_" else url_decode(raw)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """``Content-Type: auth/request``: the first thing an inbound connection hears."""


@dataclass(frozen=True, slots=True)
class CommandReply:
    """The answer to a command other than ``api`` (and other than outbound ``connect``).

    ``text`` is ``Reply-Text`` as written (``+OK accepted``, ``-ERR invalid``, ...). ``ok``
    is False only for ``-ERR ...``: a ``getvar`` answer is the bare value. ``job_uuid`` is
    set for ``bgapi``: FreeSWITCH sends it as its own header and inside the text.
    """

    ok: bool
    text: str
    job_uuid: str | None = None
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class ChannelData:
    """The outbound ``connect`` answer: a serialized CHANNEL_DATA event, values decoded.

    ``headers`` hold the caller profile, channel state and every ``variable_*``.
    """

    headers: Headers

    def get(self, name: str) -> str | None:
        return header(self.headers, name)

    @property
    def unique_id(self) -> str | None:
        return self.get("Unique-ID")


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """``Content-Type: api/response``: the output of a blocking ``api`` command."""

    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True, eq=False)
class Event:
    """A ``text/event-plain`` event: its headers, its own body split off.

    ``block`` is the header block, one ``name: value`` per line with the values as they came
    (URL-encoded); ``get``, ``raw_headers`` and ``headers`` read it when asked, and ``get``
    decodes the one value it returns (:func:`url_decode`, ``_undef_`` as ``""``): a consumer
    reads a few of an event's 20 to 200 headers, and splitting, indexing and decoding them
    all was most of an event's cost (bench/esl.py). :func:`decode_event` has checked every
    line before making one. The event's inner ``Content-Length`` is framing and is not kept
    among them (the trap greenswitch falls into is leaving a BACKGROUND_JOB result inside
    that header). Equal when name, decoded headers, body and subclass are.
    """

    name: str
    block: str
    body: bytes = b""
    subclass: str | None = None
    # ``block`` lower-cased, for ``get``; None when lower-casing changed its length (a rare
    # non-ASCII name), which would shift every offset: ``get`` then scans the lines.
    lowered: str | None = field(default=None, repr=False)

    @property
    def raw_headers(self) -> Headers:
        """Every header in wire order, duplicates kept, values not decoded."""
        return tuple(_BLOCK_LINE.findall(self.block))

    @property
    def headers(self) -> Headers:
        return tuple((k, _decode_value(v)) for k, v in self.raw_headers)

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (case-insensitive, as ``switch_event_get_header``),
        decoded; None if there is none."""
        raw = _raw_value(self.block, self.lowered, name)
        return None if raw is None else _decode_value(raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.name, self.headers, self.body, self.subclass) == \
            (other.name, other.headers, other.body, other.subclass)

    def __hash__(self) -> int:
        return hash((self.name, self.headers, self.body, self.subclass))


def _raw_value(block: str, lowered: str | None, name: str) -> str | None:
    # A name is everything before a line's first colon, and a line starts the block or
    # follows a newline: "\nname:" in the lower-cased block finds the first such line, in C.
    key = name.lower()
    if lowered is None:
        return header(tuple(_BLOCK_LINE.findall(block)), name)
    if not key or ":" in key or "\n" in key:
        return None  # no header's name holds these: the search would match across them
    if lowered.startswith(key + ":"):
        start = len(key) + 1
    else:
        at = lowered.find("\n" + key + ":")
        if at < 0:
            return None
        start = at + len(key) + 2
    end = block.find("\n", start)
    return (block[start:] if end < 0 else block[start:end]).lstrip(" ")


@dataclass(frozen=True, slots=True)
class DisconnectNotice:
    """``text/disconnect-notice``: FreeSWITCH is about to close, or (``linger``) will later.

    ``disposition`` is None on inbound sockets, ``disconnect`` or ``linger`` on outbound ones
    (``send_disconnect`` and ``read_packet``); ``linger_seconds`` is -1 for "until the last
    event", as ``linger`` without a number sets it.
    """

    message: str
    disposition: str | None = None
    session_uuid: str | None = None
    linger_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class RudeRejection:
    """``text/rude-rejection``: the inbound ACL refused our address; the socket closes."""

    message: str


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A well-formed frame of a kind we do not interpret (log/data, event-json, event-xml)."""

    frame: Frame


Message: TypeAlias = (
    AuthRequest
    | CommandReply
    | ChannelData
    | ApiResponse
    | Event
    | DisconnectNotice
    | RudeRejection
    | UnknownFrame
)


def classify(frame: Frame) -> Message:
    """Interpret one frame. Raises :class:`ProtocolError` if its content contradicts its type."""
    # First: nearly every frame on a busy link, and spelt as read_packet writes it.
    if frame.content_type == "text/event-plain":
        return decode_event(frame.body)
    kind = frame.content_type.strip().lower()
    if kind == "text/event-plain":
        return decode_event(frame.body)
    if kind == "auth/request":
        return AuthRequest()
    if kind == "command/reply":
        return _command_reply(frame)
    if kind == "api/response":
        return ApiResponse(frame.body)
    if kind == "text/disconnect-notice":
        linger = frame.get("Linger-Time")
        return DisconnectNotice(
            message=frame.body.decode("utf-8", "replace"),
            disposition=frame.get("Content-Disposition"),
            session_uuid=frame.get("Controlled-Session-UUID"),
            linger_seconds=_int_or_error("Linger-Time", linger) if linger is not None else None,
        )
    if kind == "text/rude-rejection":
        return RudeRejection(frame.body.decode("utf-8", "replace"))
    return UnknownFrame(frame)


def _int_or_error(name: str, text: str) -> int:
    digits = text[1:] if text.startswith("-") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > _MAX_LENGTH_DIGITS:
        raise ProtocolError(f"{name} is not an integer: {text[:40]!r}")
    return int(text)


_JOB_PREFIX: Final = "+OK Job-UUID: "


def _command_reply(frame: Frame) -> CommandReply | ChannelData:
    # The connect answer is a serialized event (parse_command, "connect" branch): recognise
    # it by the headers only a serialized event has. 2008-era FreeSWITCH sent no Reply-Text
    # at all there (the Event Socket Outbound docs show one), current ones send "+OK\n".
    if frame.get("Event-Name") is not None or frame.get("Socket-Mode") is not None:
        return ChannelData(tuple((k, _decode_value(v)) for k, v in frame.headers))
    text = frame.get("Reply-Text")
    if text is None:
        raise ProtocolError("command/reply without Reply-Text")
    job_uuid = frame.get("Job-UUID")
    if job_uuid is None and text.startswith(_JOB_PREFIX):
        job_uuid = text[len(_JOB_PREFIX) :].strip()  # docs-era bgapi reply: only in the text
    return CommandReply(
        ok=not text.startswith("-ERR"), text=text, job_uuid=job_uuid, headers=frame.headers
    )


# An empty line: at the very start, or a newline followed by "\r"? and a newline. The block
# before it excludes that first newline.
_EMPTY_LINE: Final = re.compile(rb"(?:^|\n)\r?\n")


# A whole event block of header lines, each a name (no colon), the colon, the value (spaces
# after the colon are the value's, dropped when read), checked in one pass: possessive, so a
# line that fails is not retried another way.
_EVENT_BLOCK: Final = re.compile(r"(?:[^:\n]++:[^\n]*+\n)*+[^:\n]++:[^\n]*+")
# One line of a checked block: its name and its value, spaces after the colon dropped.
_BLOCK_LINE: Final = re.compile(r"^([^:\n]+): *(.*)$", re.MULTILINE)


def decode_event(data: bytes) -> Event:
    """Parse the body of a ``text/event-plain`` frame (``switch_event_serialize`` output).

    Header values are kept as they came and URL-decoded when read (:class:`Event`). If the
    headers carry ``Content-Length: n``, exactly n bytes must follow the empty line; without
    it nothing may follow. Anything else raises :class:`ProtocolError`.
    """
    # The block ends at the first empty line (a lone "\r" counts as empty, as in Decoder).
    # The usual event (ASCII, no CR, no inner Content-Length) is checked with one regular
    # expression over the whole block and kept as it is; anything else line by line, and
    # kept as the same lines written again: an event has 20 to 200 headers and a Python
    # loop over them was most of its cost (bench/esl.py).
    if b"\r" not in data:
        if data.startswith(b"\n"):
            block, rest = b"", data[1:]
        else:
            cut = data.find(b"\n\n")
            if cut < 0:
                raise ProtocolError("event without an empty line after its headers")
            block, rest = data[:cut], data[cut + 2 :]
    else:
        end = _EMPTY_LINE.search(data)
        if end is None:
            raise ProtocolError("event without an empty line after its headers")
        block, rest = data[: end.start()], data[end.end() :]
    text: str | None = None
    lowered: str | None = None
    if block.isascii() and b"\r" not in block:
        plain = block.decode("ascii")
        lowered = plain.lower()
        if _EVENT_BLOCK.fullmatch(plain) is not None and \
                not lowered.startswith("content-length:") and \
                "\ncontent-length:" not in lowered:
            text = plain
            if rest:
                raise ProtocolError(f"event body is {len(rest)} bytes, its Content-Length "
                                    "says 0")
    if text is None:
        text = "\n".join(f"{name}: {raw}" for name, raw in _event_lines(block, rest))
        lowered = text.lower()
        if len(lowered) != len(text):
            lowered = None
    raw_name = _raw_value(text, lowered, "Event-Name")
    event_name = _decode_name(raw_name) if raw_name is not None else ""
    if not event_name:
        raise ProtocolError("event without Event-Name")
    raw_sub = _raw_value(text, lowered, "Event-Subclass") if event_name == "CUSTOM" else None
    return Event(name=event_name, block=text, body=rest,
                 subclass=None if raw_sub is None else _decode_name(raw_sub), lowered=lowered)


# Event names and subclasses are a few dozen strings that modules define (``sofia%3A%3A
# register`` on nearly every event of a busy registrar): each decoded once, not once an event.
@functools.lru_cache(maxsize=256)
def _decode_name(raw: str) -> str:
    return _decode_value(raw)


def _event_lines(block: bytes, rest: bytes) -> list[tuple[str, str]]:
    """The header lines one by one (and the inner Content-Length checked against ``rest``),
    raising on the first line that is not a header."""
    pairs: list[tuple[str, str]] = []
    length: int | None = None
    for line in block.split(b"\n") if block else ():
        if line.endswith(b"\r"):
            line = line[:-1]
        name, raw = _split_header_line(line)
        if name.lower() == "content-length":
            if length is not None:
                raise ProtocolError("event with two Content-Length headers")
            length = _content_length(((name, raw),), MAX_CONTENT_LENGTH)
            continue
        pairs.append((name, raw))
    expected = length or 0
    if len(rest) != expected:
        raise ProtocolError(
            f"event body is {len(rest)} bytes, its Content-Length says {expected}"
        )
    return pairs


# --------------------------------------------------------------------------- encoders


def _check(field: str, value: str, *, word: bool = False, allow_empty: bool = False) -> str:
    if not value and not allow_empty:
        raise UnsafeValue(field, value, "must not be empty")
    for bad, why in (("\r", "CR"), ("\n", "LF"), ("\0", "NUL")):
        if bad in value:
            raise UnsafeValue(field, value, f"contains {why}, which would split the command")
    if word and (" " in value or "\t" in value):
        raise UnsafeValue(field, value, "must be one word: FreeSWITCH splits at spaces")
    return value


def _check_header_value(field: str, value: str) -> str:
    _check(field, value)
    if value.startswith(" "):
        # read_packet skips spaces after the colon: the value would arrive shortened.
        raise UnsafeValue(field, value, "leading spaces would be stripped by FreeSWITCH")
    return value


def _command(line: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    text = line + "\n" + "".join(f"{name}: {value}\n" for name, value in headers) + "\n"
    return text.encode("utf-8")


def encode_api(command: str, arg: str | None = None) -> bytes:
    """``api <command> [arg]``: blocking; answered by ``api/response``, no command/reply."""
    line = "api " + _check("command", command, word=True)
    if arg is not None:
        line += " " + _check("arg", arg, allow_empty=True)
    return _command(line)


def encode_bgapi(command: str, arg: str | None = None, *, job_uuid: str | None = None) -> bytes:
    """``bgapi <command> [arg]`` with an optional ``Job-UUID`` header of our choosing.

    FreeSWITCH copies the Job-UUID into a 37-byte buffer (``switch_copy_string`` into
    ``acs->uuid_str``), silently cutting anything past 36 characters; we refuse those.
    """
    line = "bgapi " + _check("command", command, word=True)
    if arg is not None:
        line += " " + _check("arg", arg, allow_empty=True)
    headers: list[tuple[str, str]] = []
    if job_uuid is not None:
        _check_header_value("job_uuid", job_uuid)
        if len(job_uuid) > 36:
            raise UnsafeValue("job_uuid", job_uuid, "FreeSWITCH keeps only 36 characters")
        headers.append(("Job-UUID", job_uuid))
    return _command(line, headers)


def encode_event_plain(names: Sequence[str]) -> bytes:
    """``event plain NAME ...``; ``CUSTOM`` is followed by subclass names (``sofia::register``).

    Subscriptions add up: FreeSWITCH never removes names on a later ``event`` command.
    """
    if not names:
        raise UnsafeValue("names", "", "at least one event name is needed")
    return _command("event plain " + " ".join(_check("name", n, word=True) for n in names))


def encode_sendmsg(
    app: str,
    arg: str | None = None,
    *,
    uuid: str | None = None,
    event_lock: bool = False,
    event_uuid: str | None = None,
) -> bytes:
    """``sendmsg [uuid]`` with ``call-command: execute`` to run a dialplan application.

    Without ``uuid`` it acts on the socket's own channel (outbound mode). ``event_lock``
    makes FreeSWITCH finish this application before it parses the next message;
    ``event_uuid`` comes back as ``Application-UUID`` in CHANNEL_EXECUTE(_COMPLETE).
    """
    line = "sendmsg"
    if uuid is not None:
        line += " " + _check("uuid", uuid, word=True)
    headers = [
        ("call-command", "execute"),
        ("execute-app-name", _check_header_value("app", _check("app", app, word=True))),
    ]
    if arg is not None:
        headers.append(("execute-app-arg", _check_header_value("arg", arg)))
    if event_lock:
        headers.append(("event-lock", "true"))
    if event_uuid is not None:
        headers.append(("Event-UUID", _check_header_value("event_uuid", event_uuid)))
    return _command(line, headers)


def encode_connect() -> bytes:
    """``connect``: the first command on an outbound socket; answered by :class:`ChannelData`."""
    return _command("connect")


def encode_myevents(uuid: str | None = None) -> bytes:
    """``myevents [uuid]``: only events of one channel (the socket's own, outbound)."""
    if uuid is None:
        return _command("myevents")
    return _command("myevents " + _check("uuid", uuid, word=True))


def encode_linger(seconds: int | None = None) -> bytes:
    """``linger [seconds]``: keep the socket after hangup; without seconds, until the end.

    Note: on an outbound socket without ``full`` FreeSWITCH answers ``-ERR command not
    found`` (parse_command returns early for OUTBOUND && !FULL before reaching linger).
    """
    if seconds is None:
        return _command("linger")
    if seconds <= 0:
        raise UnsafeValue("seconds", str(seconds), "must be positive; omit for no limit")
    return _command(f"linger {int(seconds)}")


def encode_sendevent(name: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """``sendevent NAME`` with ``headers``: fired into FreeSWITCH's event system as if a module
    had fired it (a PRESENCE_IN lights BLF lamps through mod_sofia)."""
    checked = [(_check("header", key, word=True), _check_header_value(key, value))
               for key, value in headers]
    return _command("sendevent " + _check("name", name, word=True), checked)
