"""HTTP for ops: ``/status`` (HTML), ``/status.json`` and ``/metrics`` (Prometheus text).

A thin shell: read the journal (in a worker thread: the journal is synchronous SQLite and a busy
database must not stall the event loop that answers the PBX), hand the result to the pure
renderers in :mod:`backline.features.status.page`, and send it with headers that keep the page
out of caches, frames and referrers.  Anything else is a bare 404.  These pages say who engaged
the outage, why, and the backlog: the controller serves them on a listener of their own, never
on the public one (:func:`public_app`), and off loopback only behind a bearer token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from backline.core.outage import ModeChange, ModeState
from backline.core.records import AuditEntry
from backline.features.status.health import Health
from backline.features.status.metrics import CONTENT_TYPE, Metrics
from backline.features.status.page import (
    STYLE_SOURCE,
    HoursRow,
    RefusedSwitch,
    refused_switches,
    render_status,
    status_document,
)
from backline.journal.emergency import EmergencyCallRecord

log = logging.getLogger("backline.status")

DEFAULT_HISTORY = 20

# The page needs its one inline stylesheet (allowed by hash, not by 'unsafe-inline') and
# nothing else: no scripts, images, fonts, frames, forms or <base>.
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src {STYLE_SOURCE}; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")

SECURITY_HEADERS: Mapping[str, str] = {
    # The mode changes at any moment; a cached "normal" during an outage would mislead.
    hdrs.CACHE_CONTROL: "no-store",
    hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
    "Referrer-Policy": "no-referrer",
    hdrs.CONTENT_SECURITY_POLICY: CONTENT_SECURITY_POLICY,
    hdrs.X_FRAME_OPTIONS: "DENY",
    # aiohttp would announce its own and Python's versions.
    hdrs.SERVER: "Backline",
}


class ModeReader(Protocol):
    """What the status pages read from the journal (``SqlJournal`` is one)."""

    def mode_state(self) -> ModeState: ...
    def mode_history(self, limit: int = ...) -> list[ModeChange]: ...
    def desk_phone_refusals(self, limit: int = ...) -> list[AuditEntry]: ...


class JournalUnreadable(Exception):
    """The journal (or the backlog source) could not be read; the client gets a bare 503."""


Snapshot = tuple[ModeState, list[ModeChange], dict[str, int], list[EmergencyCallRecord] | None,
                 list[RefusedSwitch]]


def make_status_app(journal_reader: ModeReader, metrics: Metrics, practice_name: str, tz: str,
                    backlog: Callable[[], Mapping[str, int]], clock: Callable[[], datetime],
                    *, history_limit: int = DEFAULT_HISTORY,
                    health: Callable[[], Mapping[str, Health]] | None = None,
                    emergency_calls: Callable[[], Sequence[EmergencyCallRecord]] | None = None,
                    token: str | None = None,
                    hours: Callable[[], Sequence[HoursRow]] | None = None,
                    insecure: Callable[[], Sequence[str]] | None = None,
                    refusing_encryption: Callable[[], Sequence[str]] | None = None,
                    ) -> web.Application:
    """The aiohttp application serving ``/status``, ``/status.json`` and ``/metrics``.

    ``backlog`` (held attempts not yet delivered, per kind) and the journal reads run in a
    worker thread, so both may block; they must be safe to call from another thread.
    ``clock`` returns the timezone-aware current time.  ``health``, when given, is read in a
    worker thread too (it may read files: the PBX's voicemail folders) for the page's and the
    JSON's ``health``; it must be safe to call from another thread.  ``tz`` is
    checked here, so a bad timezone fails at start-up (``zoneinfo.ZoneInfoNotFoundError``)
    rather than per request.  ``emergency_calls``, when given, lists the latest 911 calls
    (read in the worker thread with the rest).  ``token``, when given, is the bearer token every
    request must carry (``Authorization: Bearer TOKEN``, compared in constant time); without
    it the answer is a bare 401 whatever the path, and "" refuses every request.  ``hours``,
    when given, says the practice's hours now (read on the event loop: it must not block);
    ``insecure``, what the config sends in the clear (the same); ``refusing_encryption``,
    the desk phones that refused their encrypted ring (the same).
    """
    ZoneInfo(tz)
    pages = _StatusPages(journal_reader, metrics, practice_name, tz, backlog, clock,
                         history_limit, health, emergency_calls, hours, insecure,
                         refusing_encryption)
    app = public_app()
    if token is not None:
        app.middlewares.append(_bearer(token))
    app.router.add_get("/status", pages.status)
    app.router.add_get("/status.json", pages.status_json)
    app.router.add_get("/metrics", pages.metrics)
    return app


def public_app() -> web.Application:
    """An application with no routes of its own: bare errors, the security headers.  The
    controller's public listener (SMS webhook, alert links) is one, so a request there for
    ``/status`` or ``/metrics`` gets the same bare 404 as any unknown path."""
    app = web.Application(middlewares=[_bare_errors])
    app.on_response_prepare.append(_secure)
    return app


def _bearer(token: str) -> Middleware:
    """Middleware: every request carries ``Authorization: Bearer <token>`` or gets a bare
    401, whatever the path ("" refuses everything: a token configured but unreadable)."""
    expected = hashlib.sha256(token.encode()).digest()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        # Digests of both sides: compare_digest then takes as long whatever was sent, its
        # length included.
        presented = hashlib.sha256(given.strip().encode("utf-8", "replace")).digest()
        if not (hmac.compare_digest(presented, expected) and token
                and scheme.lower() == "bearer"):
            return _bare(401, "Unauthorized", {hdrs.WWW_AUTHENTICATE: 'Bearer realm="status"'})
        return await handler(request)

    return require_token


class _StatusPages:
    def __init__(self, reader: ModeReader, metrics: Metrics, practice_name: str, tz: str,
                 backlog: Callable[[], Mapping[str, int]], clock: Callable[[], datetime],
                 history_limit: int,
                 health: Callable[[], Mapping[str, Health]] | None = None,
                 emergency_calls: Callable[[], Sequence[EmergencyCallRecord]] | None = None,
                 hours: Callable[[], Sequence[HoursRow]] | None = None,
                 insecure: Callable[[], Sequence[str]] | None = None,
                 refusing_encryption: Callable[[], Sequence[str]] | None = None,
                 ) -> None:
        self._refusing = refusing_encryption
        self._hours = hours
        self._insecure = insecure
        self._reader = reader
        self._metrics = metrics
        self._practice_name = practice_name
        self._tz = tz
        self._backlog = backlog
        self._clock = clock
        self._history_limit = history_limit
        self._health = health
        self._emergency_calls = emergency_calls

    async def status(self, request: web.Request) -> web.Response:
        state, history, backlog, calls, refused = await self._read()
        health = await asyncio.to_thread(self._health) if self._health else None
        html = render_status(self._practice_name, state, history, backlog, self._clock(),
                             self._tz, health, calls,
                             self._hours() if self._hours else None, refused,
                             self._insecure() if self._insecure else None,
                             self._refusing() if self._refusing else None)
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def status_json(self, request: web.Request) -> web.Response:
        state, history, backlog, calls, refused = await self._read()
        health = await asyncio.to_thread(self._health) if self._health else None
        body = json.dumps(status_document(state, history, backlog, health, calls,
                                          self._hours() if self._hours else None, refused,
                                          self._insecure() if self._insecure else None,
                                          self._refusing() if self._refusing else None),
                          indent=2)
        return web.Response(text=body + "\n", content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        # render() calls the backlog source, which may read the journal: off the loop.
        body = await asyncio.to_thread(self._metrics.render)
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})

    async def _read(self) -> Snapshot:
        try:
            return await asyncio.to_thread(self._snapshot)
        except Exception as exc:
            # Whatever the backend raised (JournalError, a locked or closed database): the
            # page cannot say what the mode is, and must not guess.
            raise JournalUnreadable from exc

    def _snapshot(self) -> Snapshot:
        state = self._reader.mode_state()
        history = self._reader.mode_history(self._history_limit)
        if history and history[0] != state.since:
            # A switch landed between the two reads; the history is the later view, and the
            # headline must agree with the first row of the table below it.
            state = ModeState(history[0].mode, history[0])
        calls = list(self._emergency_calls()) if self._emergency_calls else None
        refused = refused_switches(self._reader.desk_phone_refusals(self._history_limit))
        return state, history, dict(self._backlog()), calls, refused


@web.middleware
async def _bare_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as a bare status line: no path, method, exception or traceback echoed back."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        allow = exc.headers.get(hdrs.ALLOW)
        return _bare(exc.status, exc.reason, {hdrs.ALLOW: allow} if allow else {})
    except JournalUnreadable:
        log.exception("status page: cannot read the journal")
        return _bare(503, "Service Unavailable")
    except Exception:
        log.exception("status page: request failed")
        return _bare(500, "Internal Server Error")


def _bare(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=f"{status} {reason}\n", headers=headers)


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    # on_response_prepare runs for every response this app sends, the error ones included.
    response.headers.update(SECURITY_HEADERS)
