"""The backup alerts as a feature: the notifier, its link pages, and its line on the status
page (see :mod:`backline.features.seam`)."""

from __future__ import annotations

import dataclasses

from backline.features.alerts.service import Notifier, notifier_for, why_no_alerts
from backline.features.links.tokens import LINK_PREFIX
from backline.features.seam import Background, Context, Routes
from backline.features.status.health import Verdict, idle, off
from backline.journal import AlertChannel, Attempt


class Alerts(Background[Notifier]):
    """The notifier is ``service``; it may be replaced before :meth:`start` (the benchmark
    and tests give one with other gathering windows)."""

    def __init__(self, context: Context, notifier: Notifier) -> None:
        super().__init__(notifier)
        self._context = context
        self._lanes: dict[AlertChannel, str] = {}  # each channel's last error ("")

    async def start(self) -> None:
        self.service.on_result = self._result
        await super().start()

    def routes(self) -> Routes:
        return Routes(public_apps=((LINK_PREFIX.rstrip("/"),
                                    self.service.link_app(self._context.refusals)),))

    def attempt_recorded(self, attempt: Attempt) -> None:
        self.service.attempt_recorded(attempt)  # queues only: the PBX is waiting

    def _result(self, channel: AlertChannel, ok: bool, why: str) -> None:
        """Alerts are getting through while every channel's last try worked (email and SMS
        run side by side: one working must not hide the other failing)."""
        health = self._context.health
        now = self._context.clock()
        self._lanes[channel] = "" if ok else why
        failing = [c.value for c, error in self._lanes.items() if error]
        current = health["alerts"]
        if current.verdict is Verdict.OFF:
            return
        if ok:
            current = dataclasses.replace(current, last_success=now)
        else:
            current = dataclasses.replace(current, last_error=f"{channel.value}: {why}",
                                          last_error_at=now)
        health["alerts"] = dataclasses.replace(
            current, verdict=Verdict.FAILING if failing else Verdict.OK,
            says=f"alerts are not getting through by {' and '.join(failing)}" if failing
            else "alerts are being delivered")


def build(context: Context) -> Alerts | None:
    """The alerts, or None (the status page says why no alert will be sent)."""
    notifier = notifier_for(context.directory, context.journal, context.clock)
    if notifier is None:
        why = why_no_alerts(context.directory)
        context.health["alerts"] = off(f"no alert will be sent: {why}" if why
                                       else "no alert will be sent")
        return None
    context.health["alerts"] = idle("no alert sent yet")
    return Alerts(context, notifier)
