"""The life of a background sender: a task that works in rounds, woken early on demand,
stopped only between rounds.

Every leased-delivery service works this way (:mod:`backline.features.sending.leased`); tests
move their clocks by hand and then wait, with :meth:`Rounds.settle`, for a whole round that
began after the move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Rounds:
    def __init__(self, name: str) -> None:
        self.name = name
        self.woken = asyncio.Event()  # set by wake(): the task's nap ends early
        self.stopping = False
        self._task: asyncio.Task[None] | None = None
        self._started = 0
        self._done = 0
        self._round_done = asyncio.Condition()

    def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._task is None:
            self._task = asyncio.create_task(run(), name=self.name)

    def wake(self) -> None:
        """Look for due work now (after a test moved the clock, say)."""
        self.woken.set()

    async def stop(self) -> None:
        """Stop the task after the round in progress (if any)."""
        self.stopping = True
        self.woken.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def started(self) -> int:
        """How many rounds have begun (the one in progress is the latest)."""
        return self._started

    def begin(self) -> None:
        """A round starts: wake-ups from now on count for the next nap."""
        self.woken.clear()
        self._started += 1

    async def end(self) -> None:
        """A round is done, whatever became of it."""
        async with self._round_done:
            self._done += 1
            self._round_done.notify_all()

    async def settle(self, within: float = 60.0) -> None:
        """Wake the task and wait until a whole round that began after this call is done:
        what was due at the clock's current time has been tried.  TimeoutError after
        ``within`` s (a bound on a hang, not a promise: a loaded machine is slow)."""
        target = self._started + 1
        self.wake()
        async with asyncio.timeout(within), self._round_done:
            await self._round_done.wait_for(lambda: self._done >= target)
