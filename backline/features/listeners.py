"""Budgets for the listeners other machines reach: the pages/SMS listener, the status
listener and the email intake.

Every connection to one of them holds a file descriptor, and so does every FastAGI call, the
AMI or ESL link and the journal.  When idle connections to a public port took all of the
process's descriptors, Asterisk's FastAGI connections were refused and callers heard the
outage announcement in normal mode.  So:

- at start the soft descriptor limit is raised to the hard one (:func:`raise_descriptor_limit`:
  systemd's default soft limit is 1,024 and its hard one far higher);
- a :class:`DescriptorBudget` keeps ``reserve`` descriptors for the PBX: a public connection
  that would reach into them is refused at once (an HTTP 503 or an SMTP 421, then closed),
  checked both by count and by the accepted socket's own number (the kernel hands out the
  lowest free one, so a number inside the reserve means the reserve is being used, by
  whatever opened the others);
- each listener has its own cap on connections at once (:class:`PublicListener`), and the
  status listener's is set aside from the shared allowance, so ops can read the status page
  while the pages listener or the intake is flooded;
- a connection that sends nothing for ``idle_seconds`` is closed, and on HTTP one whose
  request head is not complete ``header_seconds`` after its first byte, or whose body is not
  complete ``body_seconds`` after its head (:meth:`PublicListener.middleware`).  The SMTP
  intake gets the same from aiosmtpd's own per-command timer (see
  :mod:`backline.features.email_intake`).

Refusals are counted per listener (``refused``) and logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Handler

from backline.core.connections import ListenerLimits

log = logging.getLogger("backline.listeners")

REFUSAL_LOG_SECONDS = 60.0
HTTP_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n"
             b"Retry-After: 5\r\n\r\n")
SMTP_BUSY = b"421 4.3.2 too many connections; try again later\r\n"
_HEAD_END = b"\r\n\r\n"


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; return (soft, hard) as they now are.
    A hard limit of "unlimited" is left alone (the soft one is what the kernel enforces)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the descriptor limit from %d to %d: %s", soft, hard,
                        exc)
    return soft, hard


def descriptors_in_use() -> int:
    """How many descriptors this process holds now (0 where /proc is not mounted)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


class DescriptorBudget:
    """The descriptors public connections may hold, all listeners together: the soft limit,
    less ``reserve`` (kept for FastAGI calls, AMI/ESL, the journal and outgoing
    connections), less what the process held when the budget was made."""

    def __init__(self, reserve: int, *, limit: int | None = None,
                 in_use: int | None = None) -> None:
        self.limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if limit is None else limit
        self.reserve = reserve
        held = descriptors_in_use() if in_use is None else in_use
        self.allowance = max(0, self.limit - reserve - held)
        self.aside = 0  # kept for listeners with a slice of their own (the status page)
        self.open = 0

    def set_aside(self, count: int) -> None:
        """Keeps ``count`` descriptors out of the shared allowance for a listener that must
        answer while the others are flooded (ops' status page)."""
        count = min(count, self.allowance)
        self.allowance -= count
        self.aside += count

    def admits(self, fd: int, *, own_slice: bool = False) -> bool:
        """Whether one more public connection (on descriptor ``fd``, -1 if unknown) leaves
        the reserve untouched (and, for the shared allowance, what was set aside)."""
        if own_slice:
            return fd < self.limit - self.reserve
        return self.open < self.allowance and fd < self.limit - self.reserve - self.aside


class PublicListener:
    """One listener's connections: counted against its cap and the shared budget, and
    closed when they dawdle.  ``http``: the connection speaks HTTP (request heads end with
    an empty line, bodies are read by :meth:`middleware`); ``busy``: what a refused
    connection is told before it is closed."""

    def __init__(self, name: str, limits: ListenerLimits, budget: DescriptorBudget, *,
                 http: bool, idle: bool = True, own_slice: bool = False) -> None:
        self.name = name
        self.limits = limits
        self.budget = budget
        # Its cap set aside from the shared allowance: flooding another listener leaves it
        # answering.
        self.own_slice = own_slice
        if own_slice:
            budget.set_aside(limits.max_connections)
        self.http = http
        self.idle = idle
        self.busy = HTTP_BUSY if http else SMTP_BUSY
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._guards: dict[object, _Guard] = {}
        self._refusals_logged = 0
        self._logged_at = -REFUSAL_LOG_SECONDS

    def protocol_factory(self, inner: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """Wraps ``inner`` (aiohttp's ``web.Server``, aiosmtpd's ``SMTP``): the inner
        protocol is made only for an admitted connection."""
        return lambda: _Guard(self, inner)

    def admit(self, fd: int) -> bool:
        if self.open < self.limits.max_connections \
                and self.budget.admits(fd, own_slice=self.own_slice):
            self.open += 1
            self.budget.open += not self.own_slice
            return True
        self.refused += 1
        loop = asyncio.get_running_loop()
        if loop.time() - self._logged_at >= REFUSAL_LOG_SECONDS:
            why = (f"its cap of {self.limits.max_connections} connections"
                   if self.open >= self.limits.max_connections
                   else f"the {self.budget.reserve} descriptors kept for the PBX (of a limit "
                        f"of {self.budget.limit})")
            log.warning("%s: %d new connection(s) refused: it is at %s", self.name,
                        self.refused - self._refusals_logged, why)
            self._logged_at, self._refusals_logged = loop.time(), self.refused
        return False

    def release(self) -> None:
        self.open -= 1
        self.budget.open -= not self.own_slice

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Closes the connection when the request's body has not all arrived
        ``body_seconds`` after its head, and keeps the idle timer off while the request is
        handled.  The body is left to the handler to read as it likes (the SMS webhook
        streams it with a bound): only whether it has all arrived is looked at."""
        guard = self._guards.get(request.transport)
        if guard is not None:
            guard.handling += 1
        late = asyncio.get_running_loop().call_later(
            self.limits.body_seconds, self._body_late, request)
        try:
            return await handler(request)
        finally:
            late.cancel()
            if guard is not None:
                guard.handling -= 1
                guard.request_done()

    def _body_late(self, request: web.Request) -> None:
        if not request.content.is_eof() and request.transport is not None:
            self.timed_out += 1
            log.debug("%s: a connection closed (request body too slow)", self.name)
            request.transport.abort()


class _Guard(asyncio.Protocol):
    """Stands between the transport and the listener's own protocol."""

    def __init__(self, listener: PublicListener, inner: Callable[[], Any]) -> None:
        self.listener = listener
        self._make_inner = inner
        self.inner: Any = None
        self.transport: asyncio.Transport | None = None
        self.handling = 0
        self._idle: asyncio.TimerHandle | None = None
        self._head: asyncio.TimerHandle | None = None
        self._in_head = True  # HTTP: waiting for a request head to end
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if not self.listener.admit(fd):
            transport.write(self.listener.busy)
            transport.close()
            return
        self.transport = transport
        self.listener._guards[transport] = self
        self._arm_idle()
        self.inner = self._make_inner()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        self._arm_idle()
        if self.listener.http and self._in_head:
            if self._head is None:
                self._head = asyncio.get_running_loop().call_later(
                    self.listener.limits.header_seconds, self._too_slow, "request head")
            seen = self._tail + data
            if _HEAD_END in seen:
                self._in_head = False
                self._head.cancel()
                self._head = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def request_done(self) -> None:
        """The handler is done with a request: the next bytes start the next head."""
        self._in_head, self._tail = True, b""

    def eof_received(self) -> bool | None:
        if self.inner is None:
            return None
        result: bool | None = self.inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is None:
            return
        self.listener.release()
        self.listener._guards.pop(self.transport, None)
        for timer in (self._idle, self._head):
            if timer is not None:
                timer.cancel()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def _arm_idle(self) -> None:
        if not self.listener.idle:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(
            self.listener.limits.idle_seconds, self._idle_out)

    def _idle_out(self) -> None:
        self._idle = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.handling or transport.get_write_buffer_size():
            self._arm_idle()  # we are the slow side (a handler, an answer still going out)
            return
        self._too_slow("idle")

    def _too_slow(self, what: str) -> None:
        self._head = None
        if self.transport is not None and not self.transport.is_closing():
            self.listener.timed_out += 1
            log.debug("%s: a connection closed (%s too slow)", self.listener.name, what)
            self.transport.abort()
