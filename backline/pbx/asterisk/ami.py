"""The AMI link, over panoramisk, with its traps guarded.

- Login is awaited with a deadline: with a wrong secret panoramisk never resolves, and ops
  need "AMI login refused" rather than a hang.
- Nothing is re-sent after a reconnect: panoramisk re-sends unanswered actions, and a
  re-sent Originate dials twice.  Every action is "forgettable" to it, and ours each carry a
  deadline, so an action lost with the link fails (``LinkDown``) and the caller decides.
- Reconnects back off (0.5 s doubling to 10 s) instead of hammering a restarting Asterisk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from panoramisk import Manager
from panoramisk.actions import Action

from backline.pbx.ports import LinkDown

log = logging.getLogger("backline.ami")


class _WithoutCallData(logging.Filter):
    """panoramisk puts whole AMI messages (caller names and numbers) into some of its lines
    ("message interpreted: …", "Fail to send …"): keep its own words, drop what follows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        cuts = [i for i in (text.find("%"), text.find(":"), text.find("{")) if i >= 0]
        record.msg = text[:min(cuts)].rstrip(" '\"") if cuts else text
        record.args = None
        return True


# The library's own logger: only warnings and errors (its debug and info lines are message
# dumps), and those without the message.
_library_log = logging.getLogger("backline.ami.library")
for _name in ("backline.ami.library", "panoramisk", "panoramisk.ami_protocol",
              "panoramisk.manager", "panoramisk.actions", "panoramisk.utils"):
    logging.getLogger(_name).setLevel(logging.WARNING)
    logging.getLogger(_name).addFilter(_WithoutCallData())

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


class LoginRefused(Exception):
    """Asterisk refused our AMI credentials (or never answered the login)."""


class _ForgetEverything:
    """panoramisk's ``forgetable_actions``: every action, so none is re-sent on reconnect."""

    def __contains__(self, _: object) -> bool:
        return True


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager with a backing-off reconnect delay and a login hook."""

    def __init__(self, link: AmiLink, **config: Any) -> None:
        self._link = link
        self._delay = BACKOFF_FIRST
        self.closing = False
        super().__init__(**config)

    @property
    def reconnect_timeout(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, BACKOFF_MAX)
        return delay

    @reconnect_timeout.setter
    def reconnect_timeout(self, _: float) -> None:
        pass

    def login(self, future: asyncio.Future[Any]) -> bool:
        ok = bool(super().login(future))
        self._link._logged_in(ok)
        if ok:
            self._delay = BACKOFF_FIRST
        return ok

    def connection_lost(self, exc: Exception | None) -> None:
        self._link._lost()
        if not self.closing:  # panoramisk would reconnect even after we closed for good
            super().connection_lost(exc)


class _ListAction(Action):  # type: ignore[misc]
    """An event-list action that also finishes on an immediate error.

    panoramisk waits for more messages after a lone ``Response: Error`` to a list action
    (e.g. PJSIPShowContacts with no contacts answers just that), so its future never resolves.
    """

    def add_message(self, message: Any) -> bool:
        if not self.responses and message.get("Response") in ("Error", "Fail", "Failure"):
            self.responses.append(message)
            if not self.future.done():
                self.future.set_result([message])
            return True
        return bool(super().add_message(message))


EventHandler = Callable[[Mapping[str, str]], None]


class AmiLink:
    def __init__(self, host: str, port: int, username: str, secret: str,
                 on_login: Callable[[], Awaitable[None]] | None = None) -> None:
        self._on_login = on_login
        self._up = asyncio.Event()
        self._refused = False
        self._manager = _Manager(self, host=host, port=port, username=username, secret=secret,
                                 ping_delay=5, ping_interval=5,
                                 forgetable_actions=_ForgetEverything(),
                                 loop=asyncio.get_running_loop(), log=_library_log)
        self.logins = 0
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def on_event(self, pattern: str, handler: EventHandler) -> None:
        def callback(_: Any, event: Mapping[str, str]) -> None:
            try:
                handler(event)
            except Exception:
                # One bad event must not stop the others from being handled.
                log.exception("AMI event handler failed for %s", pattern)
        self._manager.register_event(pattern, callback)

    async def connect(self, within: float = 10.0) -> None:
        """Connect and log in; raise ``LoginRefused`` or ``LinkDown`` after ``within`` s."""
        self._manager.connect()
        try:
            await asyncio.wait_for(self._up.wait(), within)
        except TimeoutError as exc:
            if self._refused:
                raise LoginRefused("Asterisk refused the AMI login: check the username and "
                                   "the secret (BACKLINE_AMI_SECRET)") from exc
            raise LinkDown(f"no AMI login within {within:.0f} s") from exc

    async def wait_up(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self._up.wait(), within)
        except TimeoutError:
            return False
        return True

    async def action(self, fields: Mapping[str, str], *, as_list: bool = False,
                     within: float = 5.0) -> Any:
        if not self._up.is_set():
            raise LinkDown("AMI is not connected")
        action = _ListAction(dict(fields), as_list=True) if as_list else dict(fields)
        try:
            return await asyncio.wait_for(
                self._manager.send_action(action, as_list=as_list), within)
        except TimeoutError as exc:
            raise LinkDown(f"AMI action {fields.get('Action')} unanswered") from exc

    def close(self) -> None:
        self._manager.closing = True
        self._manager.close()
        self._up.clear()

    # -- called by _Manager ----------------------------------------------------------------

    def _logged_in(self, ok: bool) -> None:
        if not ok:
            self._refused = True
            log.error("Asterisk refused the AMI login")
            return
        self._refused = False
        self.logins += 1
        self._up.set()
        log.info("AMI logged in (login %d)", self.logins)
        if self._on_login is not None:
            task = asyncio.ensure_future(self._on_login())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _lost(self) -> None:
        if self._up.is_set():
            log.warning("AMI link lost; reconnecting with backoff")
        self._up.clear()
