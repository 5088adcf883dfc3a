"""A voicemail email's link page over HTTP, beside the alerts' (backline.features.links.server),
with the same rules: a token of 256 random bits kept only as its hash, the same answer for
every dead link, every view and every listen audited before anything is served, no caching,
no referrer, a strict CSP (here also ``media-src 'self'``: the page plays its message), and no
token in any log line.

- ``GET /v/{token}``: the message (time, caller, line, length) and a player;
- ``GET /v/{token}/audio``: the recording (``audio/wav``), for that player.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from aiohttp import hdrs, web

from backline.core.records import Attempt, AuditEntry
from backline.core.refusals import Refusal
from backline.core.voicemail import wav_seconds
from backline.features.links import tokens as links
from backline.features.links.page import (
    STYLE_SOURCE,
    render_gone_page,
    render_removed_page,
    render_voicemail_page,
)
from backline.features.links.server import (
    _POLICY,
    RefusalJudge,
    _no_leaks,
    _printable,
    _read_capped,
    _redact_access_log,
    _secure,
    _too_many,
)
from backline.journal.voicemail import VoicemailLink

log = logging.getLogger("backline.voicemail.pages")

PAGE_POLICY = (f"default-src 'none'; style-src {STYLE_SOURCE}; media-src 'self'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
AUDIO_POLICY = "default-src 'none'; sandbox; frame-ancestors 'none'"


class VoicemailLinkReader(Protocol):
    """What the page needs from the journal (``SqlJournal`` is one), in a worker thread."""

    def voicemail_link(self, token_hash: str) -> VoicemailLink | None: ...
    def voicemail_message(self, attempt_id: int) -> Attempt | None: ...
    def audit(self, entry: AuditEntry) -> None: ...


def make_voicemail_app(journal: VoicemailLinkReader, practice: str, tz: str,
                       clock: Callable[[], datetime],
                       refusals: RefusalJudge | None = None) -> web.Application:
    """The voicemail link pages, to mount at ``/v``."""
    _redact_access_log()
    pages = _VoicemailPages(journal, practice, tz, clock, refusals)
    app = web.Application(middlewares=[_no_leaks])
    app.on_response_prepare.append(_secure)
    app.router.add_get("/{token}", pages.view)
    app.router.add_get("/{token}/audio", pages.audio)
    return app


class _VoicemailPages:
    def __init__(self, journal: VoicemailLinkReader, practice: str, tz: str,
                 clock: Callable[[], datetime], refusals: RefusalJudge | None) -> None:
        self._journal = journal
        self._practice = practice
        self._tz = tz
        self._clock = clock
        self._refusals = refusals
        self._gone = render_gone_page()

    async def view(self, request: web.Request) -> web.Response:
        found = await self._open(request, "voicemail.view")
        if isinstance(found, web.Response):
            return found
        link, message, audio = found
        await self._audit(request, link.id, "voicemail.view", f"message {message.id}")
        request[_POLICY] = PAGE_POLICY
        html = render_voicemail_page(self._practice, self._tz, message,
                                     wav_seconds(audio) if audio is not None else None,
                                     link.expires_at,
                                     request.match_info["token"] + "/audio")
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def audio(self, request: web.Request) -> web.Response:
        found = await self._open(request, "voicemail.listen")
        if isinstance(found, web.Response):
            return found
        link, message, audio = found
        if audio is None:
            await self._audit(request, link.id, "voicemail.listen.removed",
                              f"message {message.id}")
            return web.Response(status=410, text=render_removed_page(
                self._practice, "recording", message), content_type="text/html",
                charset="utf-8")
        await self._audit(request, link.id, "voicemail.listen", f"message {message.id}")
        request[_POLICY] = AUDIO_POLICY
        return web.Response(body=audio, headers={hdrs.CONTENT_TYPE: "audio/wav"})

    async def _open(self, request: web.Request, action: str
                    ) -> tuple[VoicemailLink, Attempt, bytes | None] | web.Response:
        """The link, its message and the recording (None once retention removed it); or
        the answer for a dead link."""
        source = request.remote or "-"
        if self._refusals is not None and self._refusals.over(source):
            self._refusals.refused(source, f"{action}.refused")
            return _too_many()
        digest = links.token_hash(request.match_info["token"])
        link = await asyncio.to_thread(self._journal.voicemail_link, digest)
        message = await asyncio.to_thread(self._journal.voicemail_message, link.attempt_id) \
            if link is not None else None
        if link is None or message is None or self._clock() >= link.expires_at:
            why = "unknown" if link is None else "expired"
            # An expired link and a token that never existed take one path: the first of each
            # from a source in a minute audited in full, the rest only counted, and past the
            # limit 429 (asking for an old link again and again cannot fill the journal).
            kind = f"{action}.refused" if link is None else f"{action}.expired"
            verdict = Refusal.FIRST if self._refusals is None else \
                self._refusals.refused(source, kind)
            if verdict is Refusal.LIMITED:
                return _too_many()
            if verdict is Refusal.FIRST:
                await self._audit(request, link.id if link else None, f"{action}.refused",
                                  why)
            return web.Response(status=404, text=self._gone, content_type="text/html",
                                charset="utf-8")
        if message.pruned is not None:
            return link, message, None
        try:
            audio = await asyncio.to_thread(_read_capped, Path(message.file))
            wav_seconds(audio)
        except (OSError, ValueError) as exc:
            log.error("voicemail page: the recording of message %d cannot be read: %s",
                      message.id, exc.strerror if isinstance(exc, OSError) else exc)
            await self._audit(request, link.id, f"{action}.failed", f"message {message.id}")
            raise web.HTTPServiceUnavailable from None
        return link, message, audio

    async def _audit(self, request: web.Request, link_id: int | None, action: str,
                     what: str) -> None:
        detail = (f"{what}; address={_printable(request.remote or '-', 64)}; "
                  f"user-agent={_printable(request.headers.get(hdrs.USER_AGENT, '-'), 256)}")
        entry = AuditEntry(self._clock(), f"voicemail-link:{link_id if link_id else '-'}",
                           action, detail)
        await asyncio.to_thread(self._journal.audit, entry)
