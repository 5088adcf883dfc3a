"""Alert links: the token, its hash, its URL and whether it still opens.  Pure but for
:func:`new_token`, which reads the operating system's randomness.

A token is 32 bytes from :mod:`secrets` (256 bits; the design asks for at least 128) in
URL-safe base64 without padding: 43 characters of ``A-Z a-z 0-9 - _``.  It encodes nothing (no
alert id, no time, no recipient): the page finds its alert by looking the token's SHA-256 up
in the journal, which keeps only that hash.  A stolen journal, or its backup, opens no page.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from backline.core.records import AlertLink

TOKEN_BYTES = 32
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
LINK_PREFIX = "/a/"
"""Link pages live under ``/a/{token}``: short, and easy to redact from any log line."""

MAX_TOKEN_CHARS = 256
"""Longer path segments are not tokens; hashing one is cheap, but there is no need to."""


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The form the journal keeps: hex SHA-256 of the token's text.  A plain hash is enough
    (no salt, no slow KDF) because the token is 256 random bits, not a password."""
    return hashlib.sha256(token[:MAX_TOKEN_CHARS].encode("utf-8", "replace")).hexdigest()


VOICEMAIL_PREFIX = "/v/"
"""A voicemail email's link (backline.features.voicemail): the same tokens, their own pages."""


def link_url(base_url: str, token: str, prefix: str = LINK_PREFIX) -> str:
    """The page's address under the config's ``pages.base_url``."""
    return base_url.rstrip("/") + prefix + token


def expiry(created_at: datetime, hours: int) -> datetime:
    return created_at + timedelta(hours=hours)


@dataclass(frozen=True, slots=True)
class Opens:
    link: AlertLink


@dataclass(frozen=True, slots=True)
class Gone:
    """Expired or unknown: deliberately one case, so the answer cannot tell them apart."""

    link_id: int | None  # for the audit log only
    why: str


LinkCheck = Opens | Gone


def check(link: AlertLink | None, now: datetime) -> LinkCheck:
    """Whether a link found (or not) in the journal opens its page at ``now``."""
    if link is None:
        return Gone(None, "unknown")
    if now >= link.expires_at:
        return Gone(link.id, "expired")
    return Opens(link)


LINK_IN_TEXT = re.compile(r"(/[av]/)[^/\s?#\"']+")


def redact_links(text: str) -> str:
    """``text`` with every link token (an alert's, a voicemail's) replaced by ``…`` (for log
    lines that quote a path)."""
    return LINK_IN_TEXT.sub(r"\1…", text)
