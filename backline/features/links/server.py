"""The link pages over HTTP: a thin aiohttp shell around :mod:`backline.features.links.page`.

``make_link_app`` returns an application to mount under
:data:`backline.features.links.tokens.LINK_PREFIX` (the controller does
``app.add_subapp("/a", ...)``), serving

- ``GET /a/{token}``: the alert's attempts, or the "expired or not valid" page;
- ``GET /a/{token}/fax/{attempt id}``: a fax on that alert, as an attachment.

**The same answer for every dead link.**  Unknown, expired and malformed tokens all take the
same path: hash, one journal lookup, one audit write, the same 404 page, byte for byte.  A
guesser learns nothing from the body, the status or the time taken.

**Every view is audited** before anything is served: time, link id (never the token),
address, user agent, and for a download the attempt.  Refusals are audited too, so guessing
shows up.  If the audit write fails, nothing is served (503).

**Headers** on every answer, errors included: no caching anywhere, no referrer, a CSP that
allows the page's one stylesheet by hash and nothing else, no sniffing, no framing.

**The token stays out of logs.**  This module never logs a path; ``make_link_app`` also puts a
filter on aiohttp's access logger that blanks link tokens, for a server run with an access log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from backline.core.records import AlertLink, Attempt, AttemptKind, AuditEntry
from backline.core.refusals import Refusal
from backline.features.links import tokens as links
from backline.features.links.page import (
    STYLE_SOURCE,
    render_alert_page,
    render_gone_page,
    render_removed_page,
)

log = logging.getLogger("backline.notifier.pages")

MAX_FAX_BYTES = 64 * 1024 * 1024
"""A fax PDF is tens of kilobytes a page; anything this big is not one of ours."""

PAGE_POLICY = (f"default-src 'none'; style-src {STYLE_SOURCE}; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")
# A downloaded file must never run as a page of ours, even if a browser chose to render it.
DOWNLOAD_POLICY = "default-src 'none'; sandbox; frame-ancestors 'none'"

SECURITY_HEADERS: Mapping[str, str] = {
    hdrs.CACHE_CONTROL: "no-store",
    hdrs.PRAGMA: "no-cache",  # HTTP/1.0 caches do not read Cache-Control
    "Referrer-Policy": "no-referrer",
    hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
    hdrs.X_FRAME_OPTIONS: "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
    hdrs.SERVER: "Backline",
}

Clock = Callable[[], datetime]

# The policy an answer gets, set by the handler.  Carried on the request rather than read
# back from the response because an enclosing application's own hook (the status app's) may
# have overwritten the header before ours runs.
_POLICY = web.RequestKey("backline_link_policy", str)


class LinkReader(Protocol):
    """What the pages need from the journal (``SqlJournal`` is one).  Called in a worker
    thread: the journal blocks."""

    def alert_link(self, token_hash: str) -> AlertLink | None: ...
    def alert_attempts(self, alert_id: int) -> list[Attempt]: ...
    def audit(self, entry: AuditEntry) -> None: ...


def fax_files(base: Path | None) -> Callable[[str], Path]:
    """Where an attempt's ``file`` is: as written if absolute, else under ``base``."""
    def resolve(name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() or base is None else base / path
    return resolve


class RefusalJudge(Protocol):
    """Says what to do with a refused request (backline.features.audit_upkeep.RefusalGate)."""

    def over(self, source: str) -> bool: ...
    def refused(self, source: str, action: str) -> Refusal: ...


def make_link_app(journal: LinkReader, practice: str, tz: str, clock: Clock,
                  files: Callable[[str], Path] = Path,
                  refusals: RefusalJudge | None = None) -> web.Application:
    """The link pages, to mount at :data:`backline.features.links.tokens.LINK_PREFIX` (minus
    the slash).

    ``clock`` returns the timezone-aware time (tests move it past a link's expiry);
    ``files`` maps an attempt's ``file`` to the path to read; ``refusals``, when given,
    rations the audit of refusals per source (the first in a minute in full, the rest
    counted) and answers a source past its limit 429 before the journal is read.
    """
    _redact_access_log()
    pages = _LinkPages(journal, practice, tz, clock, files, refusals)
    app = web.Application(middlewares=[_no_leaks])
    app.on_response_prepare.append(_secure)
    app.router.add_get("/{token}", pages.view)
    app.router.add_get("/{token}/fax/{attempt}", pages.download)
    return app


class _LinkPages:
    def __init__(self, journal: LinkReader, practice: str, tz: str, clock: Clock,
                 files: Callable[[str], Path], refusals: RefusalJudge | None = None) -> None:
        self._refusals = refusals
        self._journal = journal
        self._practice = practice
        self._tz = tz
        self._clock = clock
        self._files = files
        self._gone = render_gone_page()

    async def view(self, request: web.Request) -> web.Response:
        if self._limited(request, "link.view.refused"):
            return _too_many()
        check = await self._check(request)
        if isinstance(check, links.Gone):
            return await self._refuse(request, check, "link.view")
        link = check.link
        attempts = await asyncio.to_thread(self._journal.alert_attempts, link.alert_id)
        await self._audit(request, link.id, "link.view", f"{len(attempts)} attempt(s) shown")
        # Relative to /a/{token}: the download path works behind any proxy prefix.
        prefix = request.match_info["token"] + "/fax/"
        html = render_alert_page(self._practice, self._tz, attempts, link.expires_at, prefix)
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def download(self, request: web.Request) -> web.Response:
        if self._limited(request, "link.download.refused"):
            return _too_many()
        check = await self._check(request)
        if isinstance(check, links.Gone):
            return await self._refuse(request, check, "link.download")
        link = check.link
        wanted = request.match_info["attempt"]
        attempts = await asyncio.to_thread(self._journal.alert_attempts, link.alert_id)
        fax = next((a for a in attempts if str(a.id) == wanted and a.kind is AttemptKind.FAX
                    and a.file), None)
        if fax is None:
            await self._audit(request, link.id, "link.download.refused",
                              "no such fax on this alert")
            return self._gone_response()
        if fax.pruned is not None:  # retention removed it: say so, not "cannot be read"
            await self._audit(request, link.id, "link.download.removed", f"attempt {fax.id}")
            return web.Response(status=410, text=render_removed_page(self._practice, "fax", fax),
                                content_type="text/html", charset="utf-8")
        try:
            body = await asyncio.to_thread(_read_capped, self._files(fax.file))
        except OSError as exc:
            # The page said there is a file: ops must hear that it is gone.
            log.error("link page: fax of attempt %d cannot be read: %s", fax.id,
                      exc.strerror or type(exc).__name__)
            await self._audit(request, link.id, "link.download.failed", f"attempt {fax.id}")
            raise web.HTTPServiceUnavailable from None
        await self._audit(request, link.id, "link.download", f"attempt {fax.id}")
        content_type, suffix = _file_type(body)
        request[_POLICY] = DOWNLOAD_POLICY
        return web.Response(body=body, headers={
            hdrs.CONTENT_TYPE: content_type,
            hdrs.CONTENT_DISPOSITION: f'attachment; filename="fax-{fax.id}{suffix}"',
        })

    async def _check(self, request: web.Request) -> links.LinkCheck:
        digest = links.token_hash(request.match_info["token"])
        link = await asyncio.to_thread(self._journal.alert_link, digest)
        return links.check(link, self._clock())

    async def _refuse(self, request: web.Request, gone: links.Gone,
                      action: str) -> web.Response:
        # A token that never existed (guessing) and a link of ours that expired (someone holds
        # it, and may ask again and again): the first of each from a source in a minute
        # audited in full, the rest counted, and past the limit 429.
        kind = f"{action}.refused" if gone.link_id is None else f"{action}.expired"
        verdict = Refusal.FIRST if self._refusals is None else \
            self._refusals.refused(request.remote or "-", kind)
        if verdict is Refusal.LIMITED:
            return _too_many()
        if verdict is Refusal.FIRST:
            await self._audit(request, gone.link_id, f"{action}.refused", gone.why)
        return self._gone_response()

    def _limited(self, request: web.Request, action: str) -> bool:
        """The source is past its refusals this minute: refused (and counted) unread."""
        if self._refusals is None or not self._refusals.over(request.remote or "-"):
            return False
        self._refusals.refused(request.remote or "-", action)
        return True

    def _gone_response(self) -> web.Response:
        return web.Response(status=404, text=self._gone, content_type="text/html",
                            charset="utf-8")

    async def _audit(self, request: web.Request, link_id: int | None, action: str,
                     what: str) -> None:
        detail = (f"{what}; address={_printable(request.remote or '-', 64)}; "
                  f"user-agent={_printable(request.headers.get(hdrs.USER_AGENT, '-'), 256)}")
        forwarded = request.headers.get(hdrs.X_FORWARDED_FOR)
        if forwarded:  # as the proxy (or the client) claims it: recorded, not trusted
            detail += f"; forwarded-for={_printable(forwarded, 128)}"
        entry = AuditEntry(self._clock(), f"link:{link_id if link_id is not None else '-'}",
                           action, detail)
        await asyncio.to_thread(self._journal.audit, entry)


def _too_many() -> web.Response:
    """A source past its refusals for the minute: the same answer whatever it asked for."""
    return web.Response(status=429, text="429 Too Many Requests\n",
                        headers={hdrs.RETRY_AFTER: "60"})


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as f:
        body = f.read(MAX_FAX_BYTES + 1)
    if len(body) > MAX_FAX_BYTES:
        raise OSError(f"larger than {MAX_FAX_BYTES} bytes")
    return body


def _file_type(body: bytes) -> tuple[str, str]:
    if body.startswith(b"%PDF-"):
        return "application/pdf", ".pdf"
    if body[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff", ".tif"  # a fax that could not be converted, kept as received
    return "application/octet-stream", ".bin"


def _printable(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


@web.middleware
async def _no_leaks(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as a bare status line, and no log line that could quote the path (the token)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        allow = exc.headers.get(hdrs.ALLOW)
        return web.Response(status=exc.status, text=f"{exc.status} {exc.reason}\n",
                            headers={hdrs.ALLOW: allow} if allow else None)
    except Exception:
        log.exception("link page: request failed")
        return web.Response(status=503, text="503 Service Unavailable\n")


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    response.headers[hdrs.CONTENT_SECURITY_POLICY] = request.get(_POLICY, PAGE_POLICY)


class _RedactLinks(logging.Filter):
    """Blanks link tokens in a log record: its message, its arguments and the fields aiohttp's
    access logger adds (``first_request_line``, ``request_path``...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = links.redact_links(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(links.redact_links(a) if isinstance(a, str) else a
                                for a in record.args)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and (links.LINK_PREFIX in value
                                           or links.VOICEMAIL_PREFIX in value):
                setattr(record, key, links.redact_links(value))
        return True


_REDACTOR = _RedactLinks()


def _redact_access_log() -> None:
    for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web"):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)
