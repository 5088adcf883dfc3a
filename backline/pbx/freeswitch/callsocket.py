"""Our end of FreeSWITCH's outbound Event Socket: one TCP session per call, read with our
sans-IO codec (:mod:`backline.pbx.freeswitch.wire`), all in asyncio (no gevent here).

The rendered dialplan hands each call to us with ``socket HOST:PORT full`` (not ``async``:
each ``sendmsg execute`` then runs before FreeSWITCH answers it, so the applications of a
decision run in order and we learn when each is done). A session is:

``connect`` (the channel's data comes back) → ``myevents`` (this channel's events only) →
``linger`` (the socket outlives a hangup long enough to read the last events) → the
handler's ``sendmsg`` executes → we close.

If we close before a decision is carried out, or never answer, ``socket`` returns and the
dialplan goes on to its fallback (the announcement): a controller that misbehaves leaves
the caller with the outage message, never with silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from backline.pbx.freeswitch import wire
from backline.pbx.ports import UnsafeValue

log = logging.getLogger("backline.esl.call")

# FreeSWITCH answers ``connect`` and the quick commands at once; only a loaded server (or a
# held-up loop of ours) is late.  Meanwhile the caller waits with nothing else bounding it,
# and giving up sends a working call to the dialplan's fallback, the outage announcement:
# so seconds of a busy server are waited for, not a silent hang (NoReply says which).
CONNECT_TIMEOUT: Final = 10.0
# Applications like bridge and voicemail run for the length of the call; the reply to them
# comes when they end, so only the quick commands have a short deadline.
COMMAND_TIMEOUT: Final = 10.0
APPLICATION_TIMEOUT: Final = 4 * 3600.0
_READ_BYTES: Final = 65536
_QUICK_APPS: Final = frozenset({"set", "answer", "hangup"})


class CallGone(Exception):
    """The channel hung up or FreeSWITCH closed the session."""


class NoReply(TimeoutError):
    """FreeSWITCH did not answer ``what`` within ``within`` seconds: we close the session,
    and the dialplan's fallback answers the caller."""

    def __init__(self, what: str, within: float) -> None:
        super().__init__(f"FreeSWITCH did not answer {what} within {within:g} s: the session "
                         "is closed and the dialplan's fallback (the announcement) answers "
                         "the caller")
        self.what = what
        self.within = within


class CallSession:
    """One call's outbound socket: send a command, read its reply; events are noted."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 quick_within: float = COMMAND_TIMEOUT) -> None:
        self._reader = reader
        self._writer = writer
        self._quick_within = quick_within  # connect and the quick commands
        self._decoder = wire.Decoder()
        self._pending: list[wire.Message] = []
        self.hung_up = False
        self.sent: list[bytes] = []
        self.events: list[wire.Event] = []

    async def _next(self, within: float, what: str) -> wire.Message:
        try:
            async with asyncio.timeout(within):
                while not self._pending:
                    data = await self._reader.read(_READ_BYTES)
                    if not data:
                        self._decoder.eof()
                        raise CallGone("FreeSWITCH closed the session")
                    self._pending.extend(wire.classify(f) for f in self._decoder.feed(data))
        except TimeoutError as exc:
            raise NoReply(what, within) from exc
        return self._pending.pop(0)

    async def _send(self, encoded: bytes) -> None:
        self.sent.append(encoded)
        self._writer.write(encoded)
        await self._writer.drain()

    async def connect(self) -> wire.ChannelData:
        await self._send(wire.encode_connect())
        while True:
            message = await self._next(self._quick_within, "`connect` (the channel's data)")
            if isinstance(message, wire.ChannelData):
                return message
            self._note(message)

    async def command(self, encoded: bytes, within: float | None = None, *,
                      what: str = "") -> wire.CommandReply:
        """Send ``encoded`` and wait for its ``command/reply``; raise :class:`CallGone` if
        the session ends first, :class:`NoReply` if ``within`` (the quick bound) passes."""
        if self.hung_up:
            raise CallGone("the caller hung up")
        await self._send(encoded)
        first_line = encoded.split(b"\n", 1)[0].decode("ascii", "replace")
        what = what or f"`{first_line}`"
        while True:
            message = await self._next(self._quick_within if within is None else within,
                                       what)
            if isinstance(message, wire.CommandReply):
                return message
            self._note(message)

    async def execute(self, app: str, arg: str | None = None) -> wire.CommandReply:
        within = self._quick_within if app in _QUICK_APPS else APPLICATION_TIMEOUT
        return await self.command(wire.encode_sendmsg(app, arg, event_lock=True), within,
                                  what=f"`execute {app}`")  # the app's name, never its arg

    async def wait_event(self, wanted: Callable[[wire.Event], bool], within: float
                         ) -> wire.Event | None:
        """Read on until an event ``wanted`` comes; None if the session ends or ``within``
        passes first (what came meanwhile is in :attr:`events`)."""
        try:
            async with asyncio.timeout(within):
                while True:
                    message = await self._next(within, "the event awaited")
                    self._note(message)
                    if isinstance(message, wire.Event) and wanted(message):
                        return message
        except (CallGone, TimeoutError, wire.ProtocolError):
            return None

    def _note(self, message: wire.Message) -> None:
        if isinstance(message, wire.Event):
            self.events.append(message)
            if message.name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
                self.hung_up = True
        elif isinstance(message, wire.DisconnectNotice):
            self.hung_up = True
            if message.disposition != "linger":
                raise CallGone("FreeSWITCH ended the session")
        # Anything else (ApiResponse, UnknownFrame) has no place in a call session: ignored.

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


CallHandler = Callable[[wire.ChannelData, CallSession], Awaitable[None]]


class CallSocketServer:
    """Listens for FreeSWITCH's ``socket`` application and runs ``handler`` per call."""

    def __init__(self, handler: CallHandler, *, quick_within: float = COMMAND_TIMEOUT) -> None:
        self._handler = handler
        self.quick_within = quick_within  # each session's bound on connect and quick commands
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sessions = 0
        self.failures = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.sessions += 1
        session = CallSession(reader, writer, quick_within=self.quick_within)
        try:
            data = await session.connect()
            await session.command(wire.encode_myevents())
            await session.command(wire.encode_linger())
            await self._handler(data, session)
        except CallGone:
            pass  # the caller hung up: nothing left to do
        except (wire.ProtocolError, TimeoutError, ConnectionError, UnsafeValue) as exc:
            # The dialplan's fallback answers the caller once we close.
            self.failures += 1
            log.error("call session dropped: %s", exc)
        except asyncio.CancelledError:
            pass
        except Exception:  # anything unexpected with a call in hand: the fallback answers
            self.failures += 1
            log.exception("call session failed; the dialplan's fallback answers the caller")
        finally:
            await session.close()
            if task is not None:
                self._tasks.discard(task)
