"""Inbox delivery as a feature: the drain, woken when something is held in normal mode or the
outage ends, and its line on the status page (see :mod:`backline.features.seam`)."""

from __future__ import annotations

from backline.core.outage import Mode, ModeState
from backline.features.inbox.service import InboxDrain, inbox_for, why_blocked
from backline.features.seam import Background, Context
from backline.features.status.health import idle, off
from backline.journal import Attempt, Delivery


class InboxDelivery(Background[InboxDrain]):
    """The drain is ``service``."""

    def __init__(self, context: Context, drain: InboxDrain) -> None:
        super().__init__(drain)
        self._context = context
        drain.on_result = self._result

    def attempt_recorded(self, attempt: Attempt) -> None:
        if attempt.delivery is Delivery.HELD and self._context.mode().mode is Mode.NORMAL:
            self.service.wake()  # held in normal mode (an SMS): deliver it now, not later

    def mode_changed(self, state: ModeState) -> None:
        if state.mode is Mode.NORMAL:
            self.service.wake()  # the outage is over: deliver what it held

    def items_held(self) -> None:
        self.service.wake()

    def _result(self, ok: bool, why: str) -> None:
        health = self._context.health
        now, current = self._context.clock(), health["inbox"]
        health["inbox"] = current.succeeded(now, "held items are being delivered") if ok \
            else current.failed(now, why, "held items are not getting through")


def build(context: Context) -> InboxDelivery | None:
    """The drain, or None (the status page says why held items cannot be delivered)."""
    d = context.directory
    drain = inbox_for(d, context.journal, lambda: context.mode().mode, context.clock,
                      node=context.node)
    if drain is None:
        context.health["inbox"] = off(f"held items cannot be delivered: {why_blocked(d)}")
        return None
    context.health["inbox"] = idle("nothing delivered yet")
    return InboxDelivery(context, drain)
