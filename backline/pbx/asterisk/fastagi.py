"""A small FastAGI server of our own, with the traps of panoramisk's avoided.

- The ``agi_*`` header block is read with a deadline and a size bound; an empty read means
  Asterisk hung up, and ends the session (panoramisk spins forever there and freezes the loop).
- Handlers are coroutines only (panoramisk wraps sync ones with ``asyncio.coroutine``, gone
  in 3.11).
- Every command's answer is read with a deadline; a session that misbehaves is dropped, and
  the dialplan's fallback (``AGISTATUS`` is not SUCCESS) takes over, so the caller hears the
  announcement instead of silence.
- Values we send are checked: nothing from a caller is ever written into an AGI command.
- The header block is taken as Asterisk writes it, or not at all: Asterisk writes caller-set
  values (``agi_callerid`` first) unescaped before ``agi_extension`` and the arguments, so a
  caller ID holding a line break can add lines.  A repeated key, a key Asterisk never sends
  or a line that is no ``agi_key: value`` makes the request broken (the dialplan's fallback
  takes the call), and routing reads only the arguments the dialplan filtered
  (``FILTER()``), never ``agi_callerid`` or ``agi_extension``.  A long value (a 5,000
  character caller ID) is cut to ``MAX_VALUE`` rather than dropping the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from backline.pbx.asterisk.dialplan_variables import AGI_DOCTOR, AGI_DOCTOR_REPLY
from backline.pbx.ports import UnsafeValue

log = logging.getLogger("backline.agi")

HEADER_TIMEOUT = 2.0
REPLY_TIMEOUT = 2.0
MAX_HEADER_LINES = 128
MAX_LINE = 4096
MAX_VALUE = 1024  # a header value kept past this is cut: no value we route on comes near it
MAX_HEADER_BYTES = 32 * 1024  # the stream's limit: a header block is about 1 KiB
MAX_ARGS = 16
# Connections the kernel completes for us while the loop is held up (asyncio's default is
# 100).  Asterisk gives a FastAGI connect 2 s (res_agi's MAX_AGI_CONNECT), and a SYN the full
# queue drops is sent again only after 1 s and 3 s: at 180 calls a second, a loop held up
# for about 0.6 s sent calls to the dialplan's fail-safe; 1024 covers 5 s of such a rate.
BACKLOG = 1024

# Every key Asterisk 22 writes before the arguments (res_agi.c ``setup_env``; the first two
# for FastAGI only), and no other.
ASTERISK_KEYS = frozenset({
    "agi_network", "agi_network_script", "agi_request", "agi_channel", "agi_language",
    "agi_type", "agi_uniqueid", "agi_version", "agi_callerid", "agi_calleridname",
    "agi_callingpres", "agi_callingani2", "agi_callington", "agi_callingtns", "agi_dnid",
    "agi_rdnis", "agi_context", "agi_extension", "agi_priority", "agi_enhanced",
    "agi_accountcode", "agi_threadid"})
_ARG_KEY = re.compile(r"agi_arg_([1-9][0-9]?)")

# '~': in contacts (an unreserved URI character; Kamailio's ``;alias=IP~PORT~PROTO`` for a
# desk phone on TLS behind the registrar); nothing in the dialplan or Dial parses it.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9 _.,:;/&@+*#'()=^~-]*")
_SAFE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_RESULT = re.compile(rb"200 result=(-?\d+)")


class AgiHangup(Exception):
    """Asterisk closed the session (the caller hung up, or the channel is gone)."""


class AgiProtocolError(Exception):
    """Asterisk sent something we do not understand, or too much, or too late."""


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """The header block of one FastAGI session.  Every value is untrusted text."""

    script: str                  # the path after agi://host:port/
    headers: Mapping[str, str]
    args: tuple[str, ...] = field(default=())

    def get(self, key: str) -> str:
        return self.headers.get(f"agi_{key}", "")


_KEY = re.compile(r"agi_[a-z0-9_]+")


def parse_header_line(line: bytes) -> tuple[str, str] | None:
    """``agi_key: value`` → (key, value), the value cut to ``MAX_VALUE`` characters; anything
    else (junk, injected lines) → None."""
    return _parsed(line.decode("utf-8", "replace").rstrip("\r\n"))


def _parsed(text: str) -> tuple[str, str] | None:
    key, sep, value = text.partition(": ")
    # Asterisk's own keys need no pattern (they match it): a call's thirty lines cost one
    # set lookup each rather than a regex (bench/outage_cpu.py).
    if not sep or (key not in ASTERISK_KEYS and not _KEY.fullmatch(key)):
        return None
    return key, value[:MAX_VALUE]


def known_key(key: str) -> bool:
    if key in ASTERISK_KEYS:
        return True
    m = _ARG_KEY.fullmatch(key)
    return m is not None and int(m.group(1)) <= MAX_ARGS


def headers_from_lines(lines: Sequence[bytes]) -> dict[str, str]:
    """The header block's lines as Asterisk wrote them, or AgiProtocolError: a line that is
    no ``agi_key: value``, a key Asterisk does not send, or a key twice means a value held
    line breaks (a caller ID rewriting the request), and nothing in it can be trusted."""
    if len(lines) > MAX_HEADER_LINES:
        raise AgiProtocolError(f"more than {MAX_HEADER_LINES} AGI header lines")
    headers: dict[str, str] = {}
    args = 0
    for line in lines:
        if line.startswith(b"HANGUP"):
            raise AgiHangup()
        parsed = _parsed(line.decode("utf-8", "replace").rstrip("\r\n"))
        if parsed is None:
            raise AgiProtocolError("an AGI header line that is not 'agi_key: value'")
        key, value = parsed
        if not known_key(key):
            raise AgiProtocolError(f"an AGI header key Asterisk does not send: {key[:40]}")
        if key in headers:
            raise AgiProtocolError(f"the AGI header {key} twice: a value held a line break")
        # The arguments come last, numbered from 1 in order, as Asterisk writes them.
        is_arg = key.startswith("agi_arg_")
        if (is_arg and key != f"agi_arg_{args + 1}") or (args and not is_arg):
            raise AgiProtocolError(f"the AGI header {key} out of Asterisk's order")
        args += is_arg
        headers[key] = value
    return headers


def request_from_headers(headers: dict[str, str]) -> AgiRequest:
    network_script = headers.get("agi_network_script", "")
    args = []
    i = 1
    while f"agi_arg_{i}" in headers:
        args.append(headers[f"agi_arg_{i}"])
        i += 1
    return AgiRequest(network_script.split("?", 1)[0], headers, tuple(args))


class AgiSession:
    """One call's FastAGI conversation: send a command, read its ``200 result=``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        # When the first command went out (perf_counter): the decision is made by then, and
        # what follows is Asterisk's answer.
        self.first_sent_at: float | None = None

    async def read_request(self) -> AgiRequest:
        # The whole block in one read, under one deadline: it is some thirty lines on every
        # call's path, and a read per line cost more than the rest of the decision.
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                block = await self._reader.readuntil(b"\n\n")
        except TimeoutError as exc:
            raise AgiProtocolError("Asterisk went silent") from exc
        except asyncio.IncompleteReadError as exc:  # closed inside the block: hung up
            raise AgiHangup() from exc
        except asyncio.LimitOverrunError as exc:
            raise AgiProtocolError("an AGI header block larger than we accept") from exc
        # The block ends with the blank line's two b"".  A long line (a caller ID of
        # thousands of characters) is fine: the block as a whole is bounded by the stream.
        return request_from_headers(headers_from_lines(block.split(b"\n")[:-2]))

    async def _readline(self) -> bytes:
        try:
            line = await self._reader.readline()
        except ValueError as exc:  # the line exceeded the stream's limit
            raise AgiProtocolError("an AGI line longer than we accept") from exc
        if len(line) > MAX_LINE:
            raise AgiProtocolError("an AGI line longer than we accept")
        if not line:
            raise AgiHangup()
        if line.startswith(b"HANGUP"):
            raise AgiHangup()
        return line

    async def command(self, text: str, *, last: bool = False) -> int:
        """Send one AGI command; return its result code.  ``last``: nothing follows it, and
        our side of the connection ends with it (see :meth:`conclude`)."""
        self._writer.write(text.encode() + b"\n")
        if last and self._writer.can_write_eof():
            self._writer.write_eof()
        if self.first_sent_at is None:
            self.first_sent_at = time.perf_counter()
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                await self._writer.drain()
                return await self._result()
        except TimeoutError as exc:
            raise AgiProtocolError("Asterisk went silent") from exc

    async def _result(self) -> int:
        while True:
            line = await self._readline()
            m = _RESULT.match(line)
            if m:
                return int(m.group(1))
            if line.startswith((b"5", b"4")):
                raise AgiProtocolError(f"AGI command refused: {line[:80]!r}")
            # anything else (e.g. a stray blank line) is skipped until the deadline

    async def set_variable(self, name: str, value: str) -> None:
        await self.set_variables([(name, value)])

    async def conclude(self, name: str, value: str) -> None:
        """Set the decision's one variable as the session's last command, our side of the
        connection ending with it: Asterisk reads the command and then the end, and goes on
        with the call as soon as it has set the variable, without waiting for this loop to
        read its answer and close (one wake-up of ours less on every call's path; the
        answer is still read, and a refusal still drops the session)."""
        line = _set_variable_line(name, value)
        await self.command(line, last=True)

    async def set_variables(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Set every variable, in order; every value is checked before any is sent.

        One command, one answer, then the next: Asterisk reads AGI commands through a
        buffered stream but waits on the socket before each read, so commands sent ahead
        sit unread in its buffer until the connection closes (seen in bench/calls.py: two
        seconds per call).
        """
        lines = [_set_variable_line(name, value) for name, value in pairs]
        for line in lines:
            await self.command(line)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


def _set_variable_line(name: str, value: str) -> str:
    """The SET VARIABLE command, or UnsafeValue for a name or value we never send."""
    if not _SAFE_NAME.fullmatch(name):
        raise UnsafeValue("variable name", name, "is not one we set")
    if not _SAFE_VALUE.fullmatch(value) or len(value) > 1024:
        raise UnsafeValue(name, value, "has characters we never send")
    return f'SET VARIABLE {name} "{value}"'


Handler = Callable[[AgiRequest, AgiSession], Awaitable[None]]


class FastAgiServer:
    """Routes each session by its script path to an async handler."""

    def __init__(self, routes: Mapping[str, Handler],
                 on_latency: Callable[[str, float, float], None] | None = None) -> None:
        """``on_latency(script, decided, total)``: seconds from the request's last header line
        to the decision's first byte out, and to the end of the handler (Asterisk's answers
        to our commands included)."""
        for name, handler in routes.items():
            if not inspect.iscoroutinefunction(handler):
                raise TypeError(f"FastAGI handler for {name!r} must be async")
        self._routes = dict(routes)
        self._on_latency = on_latency
        self._server: asyncio.Server | None = None
        self.sessions = 0
        self.failures = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._session, host, port,
                                                  limit=MAX_HEADER_BYTES, backlog=BACKLOG)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        session = AgiSession(reader, writer)
        self.sessions += 1
        try:
            request = await session.read_request()
            started = time.perf_counter()
            if request.script.strip("/") == AGI_DOCTOR:
                # `backline doctor` asks whether this server answers where Asterisk sends
                # calls: one harmless command, and no call, decision or latency to count.
                await session.command(AGI_DOCTOR_REPLY)
                return
            handler = self._routes.get(request.script.strip("/"))
            if handler is None:
                log.warning("FastAGI request for unknown script %r", request.script[:40])
                return
            await handler(request, session)
            if self._on_latency is not None:
                done = time.perf_counter()
                decided = session.first_sent_at or done
                self._on_latency(request.script.strip("/"), decided - started, done - started)
        except AgiHangup:
            log.info("caller hung up during the decision")
        except (AgiProtocolError, UnsafeValue) as exc:
            self.failures += 1
            log.warning("FastAGI session dropped: %s", exc)
        except (ConnectionError, OSError) as exc:
            self.failures += 1
            log.warning("FastAGI connection lost: %s", exc)
        except Exception:
            # Whatever went wrong with this call, the dialplan's fallback plays the
            # announcement; the controller itself must keep serving the next call.
            self.failures += 1
            log.exception("FastAGI handler failed; the dialplan falls back")
        finally:
            await session.close()
