"""A real SMTP server for the alert tests: aiosmtpd on 127.0.0.1, in its own thread.

``await sink.start()`` binds a free port (port 0) the first time and the same port after a
:meth:`SmtpSink.stop`, so a client configured with it sees the server go away and come back.
Every message accepted is kept as it came over the wire (``Received.raw``), in order; a test
waits for them with :meth:`SmtpSink.wait_for`, which is woken by each arrival (no polling).
:meth:`SmtpSink.refuse_next` answers the next DATA commands with a 4xx, as a busy server does.
Given ``tls`` (a server-side context), it offers STARTTLS and requires it before MAIL, as a
relay that will not take mail in the clear does; without, it offers no STARTTLS.  With
``implicit`` too, it speaks TLS from the first byte, as on port 465.  Given ``credentials``
(user, password), it offers AUTH (after TLS, when it has TLS) and accepts only those.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes  # the DATA as received, headers and every MIME part
    over_tls: bool = False  # it came over TLS (STARTTLS or implicit)

    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        transport = server.transport
        over_tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        return self._sink._arrived(envelope, over_tls)


class _AnyPortController(Controller):
    """aiosmtpd's Controller, able to bind port 0: it pokes its server at ``self.port``
    to check it is up, which must be the port actually bound."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpSink:
    def __init__(self, tls: ssl.SSLContext | None = None, *, implicit: bool = False,
                 credentials: tuple[str, str] | None = None) -> None:
        self.port = 0
        self.tls = tls
        self.implicit = implicit
        self.credentials = credentials
        self.logins: list[bool] = []  # each AUTH tried: accepted or not
        self.received: list[Received] = []
        self.refusals = 0  # DATA commands answered with a 4xx so far
        self._refuse = 0
        self._lock = threading.Lock()
        self._controller: _AnyPortController | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def up(self) -> bool:
        return self._controller is not None

    async def start(self) -> None:
        assert self._controller is None, "already started"
        self._loop = asyncio.get_running_loop()
        self._changed = self._changed or asyncio.Condition()
        # A new Controller each time: a stopped one has closed its event loop.
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {"ssl_context": self.tls} if self.implicit else {
                "tls_context": self.tls, "require_starttls": True}
        if self.credentials is not None:
            tls["authenticator"] = self._authenticate
            # aiosmtpd counts only STARTTLS as TLS: on implicit TLS it must not wait for it.
            tls["auth_require_tls"] = self.tls is not None and not self.implicit
        controller = _AnyPortController(_Handler(self), hostname="127.0.0.1", port=self.port,
                                        **tls)
        await asyncio.to_thread(controller.start)
        self.port = controller.port
        self._controller = controller

    async def stop(self) -> None:
        """Stop listening and cut every open connection, as a crashed server would."""
        controller, self._controller = self._controller, None
        if controller is not None:
            await asyncio.to_thread(controller.stop)

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, data: Any) -> AuthResult:  # on the server's thread
        assert self.credentials is not None
        user, password = self.credentials
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(), password.encode())
        with self._lock:
            self.logins.append(ok)
        return AuthResult(success=ok, handled=False)

    def refuse_next(self, count: int) -> None:
        """Answer the next ``count`` messages' DATA with ``451 4.3.0``."""
        with self._lock:
            self._refuse += count

    async def wait_for(self, count: int, within: float = 30.0) -> list[Received]:
        """Until at least ``count`` messages have arrived in all; return them all."""
        assert self._changed is not None, "start the sink first"
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.received) >= count)
            return list(self.received)

    def _arrived(self, envelope: Envelope, over_tls: bool) -> str:  # on the server's thread
        with self._lock:
            if self._refuse:
                self._refuse -= 1
                self.refusals += 1
                return "451 4.3.0 Try again later"
            raw = envelope.original_content or b""
            if isinstance(raw, str):
                raw = raw.encode()
            self.received.append(Received(str(envelope.mail_from),
                                          tuple(str(r) for r in envelope.rcpt_tos), raw,
                                          over_tls))
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._notify)
        return "250 2.0.0 Message accepted"

    def _notify(self) -> None:
        assert self._changed is not None
        changed = self._changed

        async def notify() -> None:
            async with changed:
                changed.notify_all()

        task: asyncio.Task[Any] = asyncio.ensure_future(notify())
        _keep.add(task)
        task.add_done_callback(_keep.discard)


_keep: set[asyncio.Task[Any]] = set()
