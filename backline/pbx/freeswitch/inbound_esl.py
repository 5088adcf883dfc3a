"""greenswitch's InboundESL with its socket reader replaced by our codec; run only inside
the gevent hub of :class:`backline.pbx.freeswitch.hub.EslHub`'s thread.

The socket reader: greenswitch leaves a ``BACKGROUND_JOB`` body inside
``headers['Content-Length']``, spins the hub at 100% CPU on a body cut short by a close
(``_read_socket`` loops on ``b''``), and has no bound on a header line. These cannot be
guarded from outside its ``receive_events``/``handle_event``, so that one part is replaced:
:class:`GuardedInboundESL` reads the socket with our own sans-IO codec
(:mod:`backline.pbx.freeswitch.wire`), which refuses wrong Content-Lengths, truncated bodies,
1 MB headers and malformed events with :class:`~backline.pbx.freeswitch.wire.ProtocolError`;
the link is then dropped and made again. greenswitch still does the connecting, the
``auth`` exchange, and the pairing of replies with commands (``_commands_sent``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import gevent
import gevent.event
from greenswitch.esl import InboundESL, NotConnectedError

from backline.pbx.freeswitch import wire

_READ_BYTES: Final = 65536


@dataclass(frozen=True, slots=True)
class Reply:
    """What greenswitch's ``send`` hands back: our classified reply, in its ``headers`` slot
    shape (``authenticate`` reads ``headers['Reply-Text']``)."""

    message: wire.CommandReply | wire.ApiResponse

    @property
    def headers(self) -> dict[str, str]:
        if isinstance(self.message, wire.CommandReply):
            return {"Reply-Text": self.message.text}
        return {}


class Dropped(Exception):
    """Set on every pending greenswitch result when its link drops."""


class GuardedInboundESL(InboundESL):  # type: ignore[misc]
    """InboundESL whose socket is read by our codec (see the module docstring for why).

    ``deliver`` gets each batch of events (called in the hub thread); ``dropped`` is set,
    with ``why``, when the link ends for any reason.
    """

    def __init__(self, host: str, port: int, password: str, timeout: float,
                 deliver: Callable[[list[wire.Event]], None],
                 on_drop: Callable[[], None]) -> None:
        super().__init__(host, port, password, timeout=timeout)
        self._deliver = deliver
        self._on_drop = on_drop
        self._decoder = wire.Decoder()
        self.dropped = gevent.event.Event()
        self.why = ""
        # Beside each pending result, the kind of answer it must get: ``api`` is answered with
        # api/response, every other command with command/reply. Replies come in order, so one
        # of the wrong kind means the stream is out of step and every later pairing is wrong.
        self._expected: list[type[wire.CommandReply] | type[wire.ApiResponse]] = []

    def start_event_handlers(self) -> None:
        # Only our reader: greenswitch's process_events greenlet would poll an empty queue.
        self._receive_events_greenlet = gevent.spawn(self.receive_events)

    def receive_events(self) -> None:
        try:
            while self._run:
                data = self.sock.recv(_READ_BYTES)
                if not data:
                    self._decoder.eof()  # raises if a frame was cut short
                    self._drop("FreeSWITCH closed the connection")
                    return
                events: list[wire.Event] = []
                for frame in self._decoder.feed(data):
                    message = wire.classify(frame)
                    if isinstance(message, wire.Event):
                        events.append(message)
                    else:
                        self._on_message(message)
                if events:
                    self._deliver(events)
        except wire.ProtocolError as exc:
            self._drop(f"FreeSWITCH broke the protocol: {exc.reason}")
        except OSError as exc:
            self._drop(f"connection lost: {exc}")

    def _on_message(self, message: wire.Message) -> None:
        if isinstance(message, wire.AuthRequest):
            self._auth_request_event.set()
        elif isinstance(message, (wire.CommandReply, wire.ApiResponse)):
            if not self._commands_sent:
                self._drop("FreeSWITCH sent a reply to no command")
            elif not isinstance(message, self._expected[0]):
                self._drop("FreeSWITCH answered out of step (a reply of the wrong kind)")
            else:
                self._expected.pop(0)
                self._commands_sent.pop(0).set(Reply(message))
        elif isinstance(message, wire.DisconnectNotice):
            self._drop("FreeSWITCH said goodbye")
        elif isinstance(message, wire.RudeRejection):
            self._drop("FreeSWITCH's ACL refused this address")
        # ChannelData (outbound only) and UnknownFrame (log/data): nothing to do here.

    def _drop(self, why: str) -> None:
        if self.dropped.is_set():
            return
        self.why = why
        self._run = False
        self.connected = False
        self._on_drop()  # first: "down" reaches asyncio before any failed command does
        sock = getattr(self, "sock", None)  # None: closed before connect() made one
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        pending: list[Any] = list(self._commands_sent)
        del self._commands_sent[:]
        del self._expected[:]
        for result in pending:
            result.set_exception(Dropped(why))
        self._auth_request_event.set()  # a connect() waiting for auth must not LoopExit
        self.dropped.set()

    def send(self, data: str) -> Any:
        """greenswitch's send, with ``sendall`` (``send`` may write part of a command)."""
        if not self.connected:
            raise NotConnectedError()
        result = gevent.event.AsyncResult()
        self._commands_sent.append(result)
        self._expected.append(wire.ApiResponse if data.startswith("api ") else wire.CommandReply)
        self.sock.sendall((data + "\n\n").encode("utf-8"))
        return result.get()

    def close(self) -> None:
        self._drop("closed by us")


def command_text(encoded: bytes) -> str:
    """A wire encoder's bytes as greenswitch's ``send`` wants them (it adds the blank line)."""
    text = encoded.decode("utf-8")
    assert text.endswith("\n\n")
    return text[:-2]
