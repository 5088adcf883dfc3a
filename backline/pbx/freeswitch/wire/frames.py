"""Bytes in, frames out: the Event Socket's envelopes, their limits and the protocol error.

The byte formats, with the FreeSWITCH functions they are read from, are in the package's
docstring (:mod:`backline.pbx.freeswitch.wire`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NoReturn, TypeAlias

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
