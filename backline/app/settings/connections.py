"""``connections:``: storage, the PBX, where Backline sends to, and its listeners (link
pages, status, email intake)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from backline.app.settings.outbound import cleartext, read_inbox, read_sms_gateway, read_smtp
from backline.app.settings.pbx import read_pbx
from backline.app.settings.reader import Reader, entry, where_of
from backline.app.yamlsource import YMap, YSeq
from backline.core.addresses import is_loopback
from backline.core.connections import (
    DEFAULT_AUDIT_YEARS,
    DEFAULT_REFUSALS_PER_MINUTE,
    SMTP_LIMITS,
    AsteriskPbx,
    Connections,
    EmailIntake,
    HostPort,
    ListenerLimits,
    Pages,
    StatusListener,
    Storage,
)
from backline.core.retention import MAX_DELIVERED_DAYS

T = TypeVar("T")

_DOMAIN = re.compile(r"(?i)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def read_connections(r: Reader, top: YMap, base: Path) -> Connections | None:
    """``connections:``; a relative SQLite path is taken from ``base``, the config's folder."""
    node = r.mapping(entry(top, "connections"), "connections", top.where)
    if node is None:
        r.problem(top.where, "connections", "a connections: section (at least storage:)")
        return None
    r.keys(node, "connections", ["pbx", "smtp", "sms_gateway", "inbox", "pages",
                                 "storage", "email_intake", "status"])
    storage = _storage(r, node, base)
    pbx = read_pbx(r, node)
    pbx_map = entry(node, "pbx")
    if isinstance(pbx, AsteriskPbx) and isinstance(pbx_map, YMap) \
            and entry(pbx_map, "node") is None and storage.url.startswith("postgres"):
        # Nodes sharing a journal tell their calls apart by the node name (Asterisk's
        # systemname in every uniqueid): without it two nodes' calls can share a key and
        # the second call's attempt is dropped as a repeat.
        r.problem(pbx_map.where, "connections.pbx.node",
                  "a node name (e.g. node: node1), required with a postgresql:// "
                  "storage: every node on a shared journal needs its own")
    if isinstance(pbx, AsteriskPbx) and isinstance(pbx_map, YMap) \
            and pbx.registrar is not None and not storage.url.startswith("postgres"):
        # The registrar's location table lives in the shared journal's database.
        r.problem(where_of(pbx_map, "registrar"), "connections.pbx.registrar",
                  "a postgresql:// storage: Kamailio keeps the registrations in its database")
    pages = _section(r, node, "pages", _pages)
    status = _section(r, node, "status", _status_listener)
    if status is None and pages is not None:
        status = StatusListener()  # where the pages listener used to serve them
    if status is not None and pages is not None and status.listen == pages.listen:
        r.problem(where_of(node, "status"), "connections.status.listen",
                  f"a HOST:PORT of its own: {pages.listen} is connections.pages.listen, "
                  "which the internet reaches (default 127.0.0.1:8089)")
    return Connections(
        storage=storage,
        pbx=pbx,
        smtp=_section(r, node, "smtp", read_smtp),
        sms_gateway=_section(r, node, "sms_gateway", read_sms_gateway),
        inbox=_section(r, node, "inbox", read_inbox),
        pages=pages,
        email_intake=_section(r, node, "email_intake", _email_intake),
        status=status,
    )


def _section(r: Reader, parent: YMap, key: str,
             build: Callable[[Reader, YMap, str], T]) -> T | None:
    node = r.mapping(entry(parent, key), f"connections.{key}", parent.where)
    return build(r, node, f"connections.{key}") if node is not None else None


def _storage(r: Reader, parent: YMap, base: Path) -> Storage:
    default = "sqlite:///var/lib/backline/journal.db"
    node = r.mapping(entry(parent, "storage"), "connections.storage", parent.where)
    if node is None:
        return Storage(default)
    r.keys(node, "connections.storage", ["url", "audit_years", "delivered_days"])
    # How long the audit log (views, downloads, switches) is kept: HIPAA's documentation
    # period is six years.
    years = r.integer(node, "audit_years", "connections.storage.audit_years",
                      DEFAULT_AUDIT_YEARS, 1, 100) or DEFAULT_AUDIT_YEARS
    # Backline's copies of faxes and voicemail the inbox accepted, removed after this many
    # days (backline.core.retention); not set, everything is kept, as before.
    days = r.integer(node, "delivered_days", "connections.storage.delivered_days", None, 1,
                     MAX_DELIVERED_DAYS) if entry(node, "delivered_days") is not None else None
    url = r.text(node, "url", "connections.storage.url", default,
                 "sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH or postgresql://...")
    url = url or default
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # libpq's own parsing: a password as user:pw@ or as ?password= is the same key.
        from psycopg import Error as PsycopgError
        from psycopg.conninfo import conninfo_to_dict

        try:
            fields = conninfo_to_dict(url)
        except PsycopgError:
            r.problem(where_of(node, "url"), "connections.storage.url",
                      "a PostgreSQL URL libpq accepts: postgresql://USER@HOST:PORT/DB "
                      "(query parameters only those libpq knows)")
            return Storage(url, years, days)
        if "password" in fields:
            r.problem(where_of(node, "url"), "connections.storage.url",
                      "no password in the URL: use PGPASSWORD or a .pgpass file")
        return Storage(url, years, days)
    if url.startswith("sqlite:///"):
        return Storage(url, years, days)
    if url.startswith("sqlite:") and len(url) > 7:
        return Storage("sqlite://" + str((base / url[7:]).resolve()), years, days)
    r.problem(where_of(node, "url"), "connections.storage.url",
              "sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH or postgresql://...")
    return Storage(default, years, days)


def _email_intake(r: Reader, node: YMap, f: str) -> EmailIntake:
    r.keys(node, f, ["listen", "domains", "max_sessions", "max_recipients", "idle_seconds",
                     "data_seconds", "held_mb", "free_floor_mb"])
    listen = r.listen(node, f, HostPort("127.0.0.1", 2526))
    domains = r.strings(node, "domains", f"{f}.domains", _DOMAIN,
                        "a mail domain of the practice, e.g. maple.example")
    listed = entry(node, "domains")
    if listed is None or (isinstance(listed, YSeq) and not listed.items):
        r.problem(where_of(node, "domains"), f"{f}.domains",
                  "at least one mail domain of the practice (other mail is refused)")
    defaults = EmailIntake(listen, ())
    return EmailIntake(
        listen, tuple(d.lower() for d, _ in domains),
        _limits(r, node, f, SMTP_LIMITS, http=False, connections="max_sessions"),
        r.integer(node, "max_recipients", f"{f}.max_recipients", defaults.max_recipients,
                  1, 1000) or defaults.max_recipients,
        r.integer(node, "held_mb", f"{f}.held_mb", defaults.held_mb, 1, 1 << 20)
        or defaults.held_mb,
        r.integer(node, "free_floor_mb", f"{f}.free_floor_mb", defaults.free_floor_mb,
                  1, 1 << 20) or defaults.free_floor_mb)


def _pages(r: Reader, node: YMap, f: str) -> Pages:
    r.keys(node, f, ["listen", "base_url", "refusals_per_minute", "insecure_cleartext",
                     *_HTTP_LIMITS])
    reported = len(r.problems)
    base_url = r.url(node, "base_url", f)
    if base_url and len(r.problems) == reported:
        # The address alert and voicemail links carry, and the SMS provider posts to.
        cleartext(r, node, f, "base_url", urlsplit(base_url).hostname or "",
                  base_url.startswith("http:"),
                  r.flag(node, "insecure_cleartext", f"{f}.insecure_cleartext", False),
                  "the links' tokens, the alert and voicemail pages (callers' numbers, "
                  "messages, recordings) and the SMS provider's posts",
                  "an https:// URL")
    return Pages(r.listen(node, f, HostPort("127.0.0.1", 8080)),
                 base_url, _limits(r, node, f, ListenerLimits()),
                 r.integer(node, "refusals_per_minute", f"{f}.refusals_per_minute",
                           DEFAULT_REFUSALS_PER_MINUTE, 1, 100000)
                 or DEFAULT_REFUSALS_PER_MINUTE)


def _status_listener(r: Reader, node: YMap, f: str) -> StatusListener:
    """``/status``, ``/status.json`` and ``/metrics``: who engaged the outage, why, the
    backlog.  Off loopback only behind a bearer token."""
    r.keys(node, f, ["listen", "token_env", "token_file", "insecure_cleartext",
                     *_HTTP_LIMITS])
    listen = r.listen(node, f, StatusListener().listen)
    token = r.secret(node, "token", f, False)
    if not is_loopback(listen.host.strip("[]")) and not token.env and not token.file:
        r.problem(where_of(node, "listen"), f"{f}.token_env",
                  f"a bearer token (token_env or token_file) for a status listener "
                  f"off loopback ({listen.host}): its pages say who engaged the outage, "
                  "why, and the backlog")
    # Plain HTTP, and the texting and conversation APIs it serves carry patient data: off
    # loopback only when the operator says so (a TLS reverse proxy belongs in front).
    cleartext(r, node, f, "listen", listen.host.strip("[]"), True,
              r.flag(node, "insecure_cleartext", f"{f}.insecure_cleartext", False),
              "the bearer token, staff texts (the party's number and the words) and "
              "conversation members' numbers",
              "a loopback address, behind a TLS reverse proxy for other machines")
    return StatusListener(listen, token, _limits(r, node, f, StatusListener().limits))


_HTTP_LIMITS = ("max_connections", "idle_seconds", "header_seconds", "body_seconds")


def _limits(r: Reader, node: YMap, f: str, default: ListenerLimits, *, http: bool = True,
            connections: str = "max_connections") -> ListenerLimits:
    """A listener's cap and timeouts (backline.features.listeners); ``connections`` is the
    cap's key (the intake's is ``max_sessions``), and its DATA deadline is ``data_seconds``."""
    body = "body_seconds" if http else "data_seconds"
    header = default.header_seconds
    if http:
        header = r.integer(node, "header_seconds", f"{f}.header_seconds", header, 1, 600) \
            or header
    return ListenerLimits(
        r.integer(node, connections, f"{f}.{connections}", default.max_connections,
                  1, 100000) or default.max_connections,
        r.integer(node, "idle_seconds", f"{f}.idle_seconds", default.idle_seconds, 1, 3600)
        or default.idle_seconds,
        header,
        r.integer(node, body, f"{f}.{body}", default.body_seconds, 1, 3600)
        or default.body_seconds)
