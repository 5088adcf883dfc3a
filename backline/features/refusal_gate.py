"""What the public listener's handlers ask when they refuse a request: the refusal tally
(backline.core.refusals) at the controller's clock, shared by the SMS webhook, the link pages
and the audit upkeep that writes the counts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from backline.core.refusals import Refusal, RefusalTally


class RefusalGate:
    """The tally at the controller's clock, for the handlers that refuse."""

    def __init__(self, tally: RefusalTally, clock: Callable[[], datetime]) -> None:
        self.tally = tally
        self._clock = clock

    def over(self, source: str) -> bool:
        return self.tally.over(source, self._clock())

    def refused(self, source: str, action: str) -> Refusal:
        return self.tally.refused(source, action, self._clock())
