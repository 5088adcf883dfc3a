"""greenswitch's InboundESL in an OS thread of its own, bridged to asyncio.

greenswitch is gevent code. Without monkey-patching, it runs safely only inside the gevent
hub of the thread that created it, so this module gives it one thread and one hub and never
touches it from anywhere else:

* work goes *in* with ``hub.loop.run_callback_threadsafe`` (the callback only spawns a
  greenlet: the hub itself must never block);
* results come *out* with ``loop.call_soon_threadsafe`` onto the asyncio loop that made the
  :class:`EslHub`; events are handed over in batches (one wake-up of the asyncio loop per
  socket read, not per event) and land in :attr:`EslHub.events`.

Traps of greenswitch 0.0.19 and how each is guarded here:

* ``connect()`` has no timeout past the TCP handshake (a switch that accepts and never says
  ``auth/request`` hangs it forever): the whole connect+auth runs under ``gevent.Timeout``.
* A bare ``Event.wait()`` raises ``LoopExit`` once the greenlets that could wake it have died
  (the reader gone on EOF before ``auth/request``): the reader sets the auth event when it
  ends, and ``LoopExit`` is caught as "link down" anyway.
* No reconnect, and commands in flight hang forever after a drop: a *new* ``InboundESL`` is
  built for every connection, and every pending command is failed when its link drops.
* The socket reader: replaced by our own codec (see
  :mod:`backline.pbx.freeswitch.inbound_esl`); greenswitch still does the connecting, the
  ``auth`` exchange, and the pairing of replies with commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

import gevent
import gevent.event
import gevent.exceptions
from greenswitch.esl import NotConnectedError

from backline.pbx.freeswitch import wire
from backline.pbx.freeswitch.inbound_esl import Dropped, GuardedInboundESL, command_text
from backline.pbx.ports import LinkDown, PbxRefused

log = logging.getLogger("backline.esl")

# An unanswered command means a stuck switch or a lost reply: either way the reply pairing
# (first in, first answered) cannot be trusted any more, so the link is dropped.
COMMAND_TIMEOUT: Final = 10.0
CONNECT_TIMEOUT: Final = 5.0
BACKOFF_FIRST: Final = 0.2
BACKOFF_MAX: Final = 5.0


class EslLinkDown(LinkDown):
    """The Event Socket link is down, dropped while a command was in flight, or a command
    went unanswered. A :class:`LinkDown`, so the controller treats both PBXs alike."""


class EslCommandFailed(PbxRefused):
    """FreeSWITCH answered ``-ERR ...``: the link is fine, the command was refused (a
    :class:`PbxRefused`: the controller's round fails and the next one tries again)."""


class EslHub:
    """The inbound Event Socket link: one thread, its gevent hub, reconnect with backoff.

    Use from the asyncio loop that created it. ``events`` receives every subscribed event;
    ``on_up`` runs (in asyncio) after every login, e.g. to reload registrations.
    """

    def __init__(self, host: str, port: int, password: str, *,
                 events: Sequence[str] = (),
                 on_up: Callable[[], object] | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT,
                 command_timeout: float = COMMAND_TIMEOUT,
                 backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_MAX),
                 queue_size: int = 0) -> None:
        self.host, self.port, self._password = host, port, password
        self.subscriptions = tuple(events)
        self.on_up = on_up
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.backoff = backoff
        self.events: asyncio.Queue[wire.Event] = asyncio.Queue(queue_size)
        self.logins = 0
        self.drops: list[str] = []
        self.events_lost = 0
        self._up = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hub: Any = None
        self._hub_ready = threading.Event()
        self._stop: gevent.event.Event | None = None
        self._esl: GuardedInboundESL | None = None
        self._changed = asyncio.Event()

    @property
    def up(self) -> bool:
        """Logged in: commands can be sent."""
        return self._up

    # -- lifecycle (asyncio side)

    async def start(self) -> None:
        """Start the thread; the link is made (and remade) in the background."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name="esl-hub", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._hub_ready.wait)

    async def stop(self) -> None:
        if self._thread is None:
            return
        with contextlib.suppress(EslLinkDown):  # the hub already gone: only join
            self._in_hub(self._stop_in_hub)
        await asyncio.to_thread(self._thread.join, 10.0)
        self._thread = None
        self._set_up(False)

    async def wait_up(self, within: float) -> None:
        """Until the link is logged in; TimeoutError after ``within`` seconds."""
        async with asyncio.timeout(within):
            while not self._up:
                changed = self._changed
                await changed.wait()

    # -- commands (asyncio side)

    async def command(self, encoded: bytes) -> wire.CommandReply | wire.ApiResponse:
        """Send one encoded command (from :mod:`wire`) and return FreeSWITCH's answer.

        Raises :class:`EslLinkDown` if the link is down, drops, or the answer does not come
        within ``command_timeout`` (the link is then dropped: see COMMAND_TIMEOUT).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[wire.CommandReply | wire.ApiResponse] = loop.create_future()
        text = command_text(encoded)
        self._in_hub(lambda: gevent.spawn(self._run_command, text, future))
        return await future

    async def api(self, command: str, arg: str | None = None) -> str:
        """``api``: blocking on the FreeSWITCH side, so only for quick commands."""
        reply = await self.command(wire.encode_api(command, arg))
        if not isinstance(reply, wire.ApiResponse):
            raise EslCommandFailed(command, getattr(reply, "text", "unexpected reply"))
        text = reply.text
        if text.startswith("-ERR"):
            raise EslCommandFailed(command, text.strip())
        return text

    # -- bridging

    def _in_hub(self, fn: Callable[[], object]) -> None:
        hub = self._hub
        if hub is None:
            raise EslLinkDown("the Event Socket thread is not running")
        hub.loop.run_callback_threadsafe(fn)

    def _to_loop(self, fn: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    @staticmethod
    def _settle(future: asyncio.Future[Any], value: object, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def _set_up(self, up: bool) -> None:
        if up != self._up:
            self._up = up
            self._changed.set()
            self._changed = asyncio.Event()

    def _logged_in(self) -> None:
        self.logins += 1
        self._set_up(True)
        if self.on_up is not None:
            result = self.on_up()
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                task.add_done_callback(_log_failure)

    def _dropped(self, why: str) -> None:
        self.drops.append(why)
        self._set_up(False)

    def _deliver(self, events: list[wire.Event]) -> None:
        """In asyncio: queue the events."""
        for event in events:
            try:
                self.events.put_nowait(event)
            except asyncio.QueueFull:
                self.events_lost += 1  # a bounded queue sheds load instead of growing

    # -- the hub thread

    def _thread_main(self) -> None:
        self._hub = gevent.get_hub()
        self._stop = gevent.event.Event()
        supervisor = gevent.spawn(self._supervise)
        self._hub_ready.set()
        try:
            supervisor.join()
        finally:
            self._hub = None
            with contextlib.suppress(Exception):
                gevent.get_hub().destroy(destroy_loop=True)

    def _stop_in_hub(self) -> None:
        assert self._stop is not None
        self._stop.set()
        if self._esl is not None:
            self._esl.close()

    def _supervise(self) -> None:
        """Connect, wait for the link to drop, back off, again; until stopped."""
        assert self._stop is not None
        delay = self.backoff[0]
        while not self._stop.is_set():
            esl = GuardedInboundESL(self.host, self.port, self._password,
                                     self.connect_timeout,
                                     lambda batch: self._to_loop(self._deliver, batch),
                                     lambda: self._to_loop(self._set_up, False))
            self._esl = esl
            why = self._connect(esl)
            if why is None:
                delay = self.backoff[0]
                self._to_loop(self._logged_in)
                gevent.wait([esl.dropped, self._stop], count=1)
                why = esl.why or "closed by us"
                esl.close()
                level = logging.INFO if self._stop.is_set() else logging.WARNING
                log.log(level, "Event Socket link to %s:%s down: %s", self.host, self.port, why)
            else:
                log.warning("Event Socket link to %s:%s not made: %s", self.host, self.port, why)
            self._esl = None
            self._to_loop(self._dropped, why)
            if self._stop.wait(timeout=delay):
                break
            delay = min(delay * 2, self.backoff[1])

    def _connect(self, esl: GuardedInboundESL) -> str | None:
        """Connect, authenticate and subscribe; None when logged in, else why not."""
        try:
            with gevent.Timeout(self.connect_timeout, NotConnectedError("no auth/request")):
                esl.connect()
                if self.subscriptions:
                    esl.send(command_text(wire.encode_event_plain(self.subscriptions)))
            if esl.dropped.is_set():
                return esl.why
            return None
        except ValueError:  # greenswitch's authenticate: the reply was not +OK accepted
            esl.close()
            return "FreeSWITCH refused the ESL password"
        except (NotConnectedError, Dropped, OSError, gevent.exceptions.LoopExit) as exc:
            esl.close()
            return esl.why if esl.why and esl.why != "closed by us" else \
                f"{type(exc).__name__}: {exc}"

    def _run_command(self, text: str, future: asyncio.Future[Any]) -> None:
        esl = self._esl
        if esl is None or not esl.connected or esl.dropped.is_set():
            self._to_loop(self._settle, future, None,
                          EslLinkDown("the Event Socket link is down"))
            return
        try:
            with gevent.Timeout(self.command_timeout, Dropped("no answer in time")):
                reply = esl.send(text)
        except Dropped as exc:
            esl._drop(str(exc))
            self._to_loop(self._settle, future, None, EslLinkDown(str(exc)))
            return
        except (NotConnectedError, OSError) as exc:
            esl._drop(f"connection lost: {exc}")
            self._to_loop(self._settle, future, None, EslLinkDown(str(exc)))
            return
        self._to_loop(self._settle, future, reply.message, None)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("after the Event Socket login: %s", task.exception())
