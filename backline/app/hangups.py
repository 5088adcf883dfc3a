"""SIGHUP and readiness for `backline run`/`up`, as a service manager sees them.

SIGHUP's default action ends the process, and the reload it asks for can only be built once
the controller and its driver exist: a SIGHUP sent while `up` waited on Asterisk's boot
(a `systemctl reload`, a `backline reload`, a log rotator) used to kill the controller.
:class:`HeldHangups` catches it from the first moment `run`/`up` runs, holds it until the
controller is ready, then runs the one reload it stands for (the file may have changed
since it was read).  Several held SIGHUPs are one reload: each reads the whole file.

:func:`notify_ready` tells systemd (``Type=notify``) the controller is serving, so that
``systemctl start`` returns, and ordering on the unit holds, only once calls can be placed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("backline.controller")


class HeldHangups:
    """Catches SIGHUP from construction on; ``ready(action)`` runs ``action`` for every
    SIGHUP from then on, and once at once if any came before."""

    def __init__(self) -> None:
        self.pending = False
        self._action: Callable[[], None] | None = None
        # Before the event loop exists: a plain handler (it only sets a flag).
        signal.signal(signal.SIGHUP, self._caught)

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True

    def on_loop(self) -> None:
        """Move the handler onto the running loop (what ``ready``'s action needs)."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hup)

    def _hup(self) -> None:
        if self._action is None:
            if not self.pending:
                log.info("SIGHUP before the controller is ready: the reload runs once it is")
            self.pending = True
        else:
            self._action()

    def ready(self, action: Callable[[], None]) -> None:
        """From now on SIGHUP runs ``action``; one held since the start runs it now."""
        self._action = action
        if self.pending:
            self.pending = False
            action()


def notify_ready() -> None:
    """``READY=1`` to systemd's notification socket when run under ``Type=notify``
    (``NOTIFY_SOCKET`` set); nothing otherwise."""
    _notify(b"READY=1\nSTATUS=serving")


def _notify(message: bytes) -> None:
    where = os.environ.get("NOTIFY_SOCKET", "")
    if not where:
        return
    if where.startswith("@"):  # an abstract socket (sd_notify(3))
        where = "\0" + where[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(where)
            s.sendall(message)
    except OSError as exc:  # the service runs on; systemd will say it never became ready
        log.error("could not tell systemd the controller is ready (%s): %s", where,
                  exc.strerror)
