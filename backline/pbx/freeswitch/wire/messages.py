"""A frame read as a message: the closed union :data:`Message`, events decoded from their body.

Values are URL-decoded as ``switch_event_serialize`` encoded them (see the package's docstring,
:mod:`backline.pbx.freeswitch.wire`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Final, TypeAlias
from urllib.parse import unquote_to_bytes

from backline.pbx.freeswitch.wire.frames import (
    _MAX_LENGTH_DIGITS,
    MAX_CONTENT_LENGTH,
    Frame,
    Headers,
    ProtocolError,
    _content_length,
    _split_header_line,
    header,
)

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
