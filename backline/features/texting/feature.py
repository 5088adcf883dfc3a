"""Staff texting as a feature (see :mod:`backline.features.seam`): the API on the status
listener, only behind its bearer token (as the conversation API); the gateway's status
callbacks on the public listener, signature-checked as inbound SMS are; the sender task.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from backline.core.outage import Mode, ModeState
from backline.core.records import AuditEntry
from backline.features.seam import Background, Context, Routes
from backline.features.sms.webhook import STATUS_PATH, make_status_routes, signing_secret
from backline.features.status.health import idle, off
from backline.features.texting.api import TextingApi
from backline.features.texting.sender import StaffTexts

HEALTH = "staff_texts"  # its line on the status page


class Texting(Background[StaffTexts]):
    def __init__(self, context: Context) -> None:
        self._context = context
        connections = context.directory.connections
        gateway, pages = connections.sms_gateway, connections.pages
        status_url = f"{pages.base_url.rstrip('/')}{STATUS_PATH}?text={{id}}" \
            if gateway is not None and pages is not None else ""
        super().__init__(StaffTexts(context.journal, gateway, self._token, context.clock,
                                    self._mode, context.book, context.conversations,
                                    status_url))
        self.api = TextingApi(context.journal, context.book, context.conversations,
                              context.clock, self._mode, self.service.wake,
                              gateway is not None)
        status = connections.status
        self._api = status is not None and bool(status.token.env or status.token.file)
        context.health[HEALTH] = off("no staff text will be sent: connections.sms_gateway is "
                                     "not configured") if gateway is None \
            else idle("no staff text sent yet")
        self.service.on_result = self._result

    def _result(self, ok: bool, why: str) -> None:
        health, now = self._context.health, self._context.clock()
        health[HEALTH] = health[HEALTH].succeeded(now, "staff texts are being sent") if ok \
            else health[HEALTH].failed(now, why, "staff texts are not getting through")

    def _mode(self) -> Mode:
        return self._context.mode().mode

    def _token(self) -> str:
        gateway = self._context.directory.connections.sms_gateway
        if gateway is None:
            return ""
        return self._context.secret(gateway.token, "connections.sms_gateway.token",
                                    "staff texts are not sent")

    def _signing_secret(self) -> str:
        return signing_secret(self._context, "every status callback is refused")

    async def _refused(self, reason: str, remote: str) -> None:
        await asyncio.to_thread(self._context.journal.audit, AuditEntry(
            self._context.clock(), f"sms-webhook:{remote[:64]}", "sms.refused",
            f"status callback: {reason}"[:200]))

    async def each_round(self) -> None:
        """A text journaled by another process (``backline text send``, another controller)
        is due: send it now rather than after the sender's nap."""
        if self._context.directory.connections.sms_gateway is None:
            return
        due = await asyncio.to_thread(self._context.journal.next_text_at)
        if due is not None and due <= self._context.clock():
            self.service.wake()

    def mode_changed(self, state: ModeState) -> None:
        self.service.wake()  # an outage closes the open texts

    def routes(self) -> Routes:
        connections = self._context.directory.connections
        public: tuple[web.RouteDef, ...] = ()
        if connections.sms_gateway is not None and connections.pages is not None:
            public = tuple(make_status_routes(
                connections.pages.base_url, self._signing_secret, self.api.status,
                self._refused, self._context.refusals.refused))
        return Routes(public=public, status=tuple(self.api.routes()) if self._api else ())


def build(context: Context) -> Texting:
    return Texting(context)
