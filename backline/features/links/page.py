"""The link page and the "expired or unknown" page.  Pure: attempts, times and the timezone in,
HTML out.

Every attempt's fields are untrusted (caller IDs and names are whatever the carrier passed
on, SMS text is whatever the sender typed, a fax station ID is whatever the machine sends), so
every value is escaped, attributes included.  The page holds one inline stylesheet, allowed by
its hash (``STYLE_SOURCE``), and nothing else: no scripts, images, fonts or external links.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from html import escape
from typing import assert_never
from zoneinfo import ZoneInfo

from backline.core.records import Attempt, AttemptKind, Outcome

STYLE = (
    "body{font:16px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1a1a1a;"
    "background:#fff;margin:2rem auto;max-width:48rem;padding:0 1rem}"
    "h1{font-size:1.3rem;margin:0 0 .3rem}"
    "h2{font-size:1.05rem;margin:0 0 .4rem}"
    ".quiet{color:#666}"
    "section{border:1px solid #ddd;border-radius:.4rem;padding:.8rem 1rem;margin:1rem 0}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}"
    "dt{color:#555}dd{margin:0;overflow-wrap:anywhere}"
    ".text{white-space:pre-wrap;overflow-wrap:anywhere}"
)
STYLE_SOURCE = f"'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'"

_TIME = "%a %d %b %Y, %H:%M:%S %Z"

_TITLES = {AttemptKind.CALL: "Call", AttemptKind.SMS: "Text message", AttemptKind.FAX: "Fax",
           AttemptKind.VOICEMAIL: "Voicemail"}


def render_alert_page(practice: str, tz: str, attempts: list[Attempt], expires_at: datetime,
                      download_prefix: str) -> str:
    """The page a valid link opens.  A fax with a file gets a download link at
    ``download_prefix + str(attempt.id)`` (relative to the page)."""
    zone = ZoneInfo(tz)
    sections = "".join(_section(a, zone, download_prefix) for a in attempts)
    if not attempts:
        sections = "<p>No attempts are listed on this alert.</p>"
    return _document(
        f"Backup alert: {practice}",
        f"<h1>{escape(practice)}: inbound activity during the outage</h1>"
        f"<p class=\"quiet\">This page works until "
        f"{escape(expires_at.astimezone(zone).strftime(_TIME))}. Every view is recorded. "
        "Do not share its address.</p>" + sections)


def render_voicemail_page(practice: str, tz: str, message: Attempt, seconds: float | None,
                          expires_at: datetime, audio_src: str) -> str:
    """The page a voicemail email's link opens: who called which line and when, and the
    message to play (``audio_src``, relative to the page), or, once retention removed the
    recording (``message.pruned``, ``seconds`` None), that it was removed and when."""
    zone = ZoneInfo(tz)
    rows = [("Time", escape(message.at.astimezone(zone).strftime(_TIME))),
            ("Caller", _sender(message)), ("Dialed", _value(message.recipient))]
    if message.pruned is not None or seconds is None:
        rows.append(("Message", _removed(message)))
    else:
        rows += [("Length", f"{seconds:.0f} s"),
                 ("Message", f"<audio controls preload=\"metadata\" "
                             f"src=\"{escape(audio_src, quote=True)}\"></audio>")]
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return _document(
        f"Voicemail: {practice}",
        f"<h1>{escape(practice)}: a voicemail</h1>"
        f"<p class=\"quiet\">This page works until "
        f"{escape(expires_at.astimezone(zone).strftime(_TIME))}. Every view is recorded. "
        "Do not share its address.</p>"
        f"<section><h2>Voicemail</h2><dl>{items}</dl></section>")


def render_removed_page(practice: str, what: str, attempt: Attempt) -> str:
    """What a link to a file retention removed answers (the link itself still works): that
    ``what`` (a fax, a recording) was removed, when, and that the inbox has it."""
    return _document(
        f"Removed: {practice}",
        f"<h1>{escape(practice)}: {escape(what)} removed</h1>"
        f"<p>This {escape(what)} was {_removed(attempt)}.</p>")


def _removed(a: Attempt) -> str:
    """``removed after N days (the inbox has it)``, or that the file cannot be shown."""
    return escape(a.pruned.says()) if a.pruned is not None else "not available"


def render_gone_page() -> str:
    """What an expired, unknown or malformed link shows: the same bytes whatever the case."""
    return _document(
        "Link expired or not valid",
        "<h1>This link has expired or is not valid</h1>"
        "<p>Backup alert links work for a limited time. Nothing can be shown here.</p>")


def _section(a: Attempt, zone: ZoneInfo, download_prefix: str) -> str:
    at = escape(a.at.astimezone(zone).strftime(_TIME))
    rows: list[tuple[str, str]] = [("Time", at)]
    match a.kind:
        case AttemptKind.CALL | AttemptKind.VOICEMAIL:
            rows += [("Caller", _sender(a)), ("Dialed", _value(a.recipient))]
        case AttemptKind.SMS:
            rows += [("From", _sender(a)), ("To", _value(a.recipient)),
                     ("Text", f"<span class=\"text\">{escape(a.text)}</span>")]
        case AttemptKind.FAX:
            rows += [("From", _sender(a)), ("To", _value(a.recipient)),
                     ("Document", _fax_document(a, download_prefix))]
        case _:
            assert_never(a.kind)
    if a.detail:
        rows.append(("Note", _value(a.detail)))
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f"<section><h2>{_TITLES[a.kind]}</h2><dl>{items}</dl></section>"


def _fax_document(a: Attempt, download_prefix: str) -> str:
    if a.outcome is Outcome.REJECTED:
        return "refused during the call (the sending machine was told it failed)"
    if a.pruned is not None:
        return _removed(a)
    if not a.file:
        return "not stored"
    href = escape(download_prefix + str(a.id), quote=True)
    label = "Download the fax (PDF)" if a.outcome is not Outcome.UNREADABLE else \
        "Download the fax as received (it could not be converted to PDF)"
    return f"<a href=\"{href}\" download rel=\"noreferrer\">{label}</a>"


def _sender(a: Attempt) -> str:
    """The outside party as filed (E.164 where the plan allows), and as it came when the
    carrier or gateway spelt it otherwise (10 national digits), so staff can match either."""
    if a.sender_raw and a.sender_raw != a.sender:
        return f"{_value(a.sender)} <span class=\"quiet\">(sent as {escape(a.sender_raw)})</span>"
    return _value(a.sender)


def _value(text: str) -> str:
    return escape(text) if text else "<span class=\"quiet\">(none)</span>"


def _document(title: str, body: str) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<meta name=\"referrer\" content=\"no-referrer\">"
            "<meta name=\"robots\" content=\"noindex,nofollow\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>\n")
