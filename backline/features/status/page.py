"""The status page and its JSON twin, rendered from what the journal says.  Pure.

The state, the history, the backlog, the time and the timezone come in; text comes out.  No
clock reads and no I/O, so a test can pin every byte.  Reasons and names are typed by people
(and a desk-phone switch carries whatever the phone sent), so every value is escaped.

The page holds one inline stylesheet and nothing else: no scripts, no images, no external
resources.  ``STYLE_SOURCE`` is that stylesheet's CSP hash, so the server can forbid every
other style instead of allowing ``'unsafe-inline'``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import assert_never
from zoneinfo import ZoneInfo

from backline.core.hours import HoursNow, HoursOverride, HoursState, hours_now
from backline.core.model import Directory
from backline.core.outage import Mode, ModeChange, ModeState, Via
from backline.core.records import AttemptKind, AuditEntry
from backline.core.srtp_refusals import FIX
from backline.features.status.health import WATCHED, Health, health_document
from backline.journal.emergency import EmergencyCallRecord

# The page reloads itself so a wall screen never shows a mode that ended an hour ago; a meta
# refresh needs no script, so the CSP can stay at default-src 'none'.
REFRESH_SECONDS = 30

# Only class selectors: inline style="" attributes are not covered by a CSP hash.
STYLE = (
    "body{font:16px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1a1a1a;"
    "background:#fff;margin:2rem auto;max-width:62rem;padding:0 1rem}"
    "h1{font-size:1.1rem;font-weight:600;color:#555;margin:0 0 .5rem}"
    "h2{font-size:1.1rem;margin:2rem 0 .5rem}"
    ".mode{font-size:3.5rem;font-weight:800;letter-spacing:.02em;margin:.2rem 0}"
    ".engaged{color:#b00020}.normal{color:#17803d}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}"
    "dt{color:#555}dd{margin:0;overflow-wrap:anywhere}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #ddd;"
    "vertical-align:top;overflow-wrap:anywhere}"
    "th{color:#555;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    "tr.engaged td.m{color:#b00020;font-weight:700}tr.normal td.m{color:#17803d}"
    ".held{color:#b00020;font-weight:700}.quiet{color:#777}"
    "td.failing{color:#b00020;font-weight:700}td.off{color:#8a4b00;font-weight:700}"
    "td.ok{color:#17803d}"
)
STYLE_SOURCE = f"'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'"

_TIME = "%Y-%m-%d %H:%M:%S %Z"

@dataclass(frozen=True, slots=True)
class RefusedSwitch:
    """A switch a desk phone asked for and was refused, as ops are shown it: the audit log
    keeps it as ``desk-phone:PHONE`` / ``outage.outage.refused``, which says little."""

    at: datetime
    desk_phone: str
    action: str  # in plain words: "engage the outage", "force the practice closed", ...
    why: str     # wrong PIN, locked out, not an admin's desk phone


# What each refused action asked for; the keys are the controller's audit actions
# (``backline/app/desk_phone.py``: ``outage.MODE`` and ``hours.STATE``, then ``.refused``).
REFUSED_ACTIONS = {
    f"outage.{Mode.OUTAGE.value}.refused": "engage the outage",
    f"outage.{Mode.NORMAL.value}.refused": "end the outage",
    f"hours.{HoursState.CLOSED.value}.refused": "force the practice closed",
    f"hours.{HoursState.OPEN.value}.refused": "force the practice open",
}
_DESK_PHONE_ACTOR = "desk-phone:"


def refused_switches(entries: Sequence[AuditEntry]) -> list[RefusedSwitch]:
    """The audit entries of refused desk-phone switches in plain words, in their order; an
    action not in ``REFUSED_ACTIONS`` is shown as recorded rather than dropped."""
    return [RefusedSwitch(e.at, e.actor.removeprefix(_DESK_PHONE_ACTOR),
                          REFUSED_ACTIONS.get(e.action, e.action), e.detail)
            for e in entries]


def refused_document(refused: Sequence[RefusedSwitch]) -> list[dict[str, str]]:
    return [{"at": r.at.isoformat(), "desk_phone": r.desk_phone, "action": r.action,
             "why": r.why} for r in refused]


HELD_EMAIL = "email"  # the backlog's kind for emails held in an outage (journal.held())


def backlog_by_kind(backlog: Mapping[str, int]) -> dict[str, int]:
    """Every attempt kind and email (0 when absent), then any other kind the controller
    holds, sorted.

    Listing the kinds with nothing held keeps the page's table and the metric's series from
    appearing and vanishing as the backlog drains.  Email is held beside the attempts (the
    journal counts it as ``email``), so it is listed with them.
    """
    # The kinds an outage holds; a voicemail (held in normal mode too, and gone to the inbox
    # within seconds) is listed while one waits, as any other kind is.
    rows = {kind.value: 0 for kind in AttemptKind if kind is not AttemptKind.VOICEMAIL} | \
        {HELD_EMAIL: 0}
    for kind in sorted(backlog):
        rows[kind] = int(backlog[kind])
    return rows


@dataclass(frozen=True, slots=True)
class HoursRow:
    """One set of hours ops are shown: the practice's (``applies_to`` "practice") or a
    number's own (its E.164 number), and its state now."""

    applies_to: str
    now: HoursNow


def hours_rows(directory: Directory, at: datetime, override: HoursOverride | None
               ) -> list[HoursRow]:
    """The practice's hours, then each number's own, at ``at`` with the admins' override."""
    rows = [HoursRow("practice", hours_now(directory.hours, at, override))] \
        if directory.hours is not None else []
    return rows + [HoursRow(n.number, hours_now(n.hours, at, override))
                   for n in directory.numbers if n.hours is not None]


def hours_document(rows: Sequence[HoursRow]) -> list[dict[str, object]]:
    """The hours in ``/status.json`` and ``backline hours status --json``."""
    out: list[dict[str, object]] = []
    for row in rows:
        o = row.now.override
        out.append({"applies_to": row.applies_to, "state": row.now.state.value,
                    "why": row.now.why.value,
                    "until": row.now.until.isoformat() if row.now.until else None,
                    "override": None if o is None or o.state is None else
                    {"state": o.state.value, "at": o.at.isoformat(), "by": o.by,
                     "via": o.via}})
    return out


def status_document(state: ModeState, history: list[ModeChange],
                    backlog: Mapping[str, int],
                    health: Mapping[str, Health] | None = None,
                    emergency_calls: Sequence[EmergencyCallRecord] | None = None,
                    hours: Sequence[HoursRow] | None = None,
                    refused: Sequence[RefusedSwitch] = (),
                    insecure: Sequence[str] | None = None,
                    refusing_encryption: Sequence[str] | None = None,
                    ) -> dict[str, object]:
    """``/status.json``: the shape of ``backline outage status --json``, plus ``backlog``, and
    ``health`` (the PBX link, alerts, inbox delivery) when the controller serves it;
    ``refused_switches``, newest first, always (an empty list when none); ``insecure``
    (what the config's opt-outs send in the clear, backline.core.wire) and
    ``desk_phones_refusing_encryption`` (backline.core.srtp_refusals) when it serves them."""
    since = state.since
    document: dict[str, object] = {
        "mode": state.mode.value,
        "engaged": state.mode is Mode.OUTAGE,
        "since": since.at.isoformat() if since else None,
        "by": since.by if since else None,
        "via": since.via.value if since else None,
        "reason": since.reason if since else None,
        "history": [{"mode": c.mode.value, "at": c.at.isoformat(), "by": c.by,
                     "via": c.via.value, "reason": c.reason} for c in history],
        "backlog": backlog_by_kind(backlog),
        "refused_switches": refused_document(refused),
    }
    if insecure is not None:
        document["insecure"] = list(insecure)
    if refusing_encryption is not None:
        document["desk_phones_refusing_encryption"] = list(refusing_encryption)
    if health is not None:
        document["health"] = health_document(dict(health))
    if emergency_calls is not None:  # the latest 911 calls, when the controller serves it
        document["emergency_calls"] = [
            {"at": c.at.isoformat(), "desk_phone": c.desk_phone, "dialled": c.dialled,
             "who": c.who, "location": c.location, "late": c.late} for c in emergency_calls]
    if hours is not None:  # the practice's hours now, when the controller serves it
        document["hours"] = hours_document(hours)
    return document


def render_status(practice_name: str, state: ModeState, history: list[ModeChange],
                  backlog: Mapping[str, int], now: datetime, tz: str,
                  health: Mapping[str, Health] | None = None,
                  emergency_calls: Sequence[EmergencyCallRecord] | None = None,
                  hours: Sequence[HoursRow] | None = None,
                  refused: Sequence[RefusedSwitch] = (),
                  insecure: Sequence[str] | None = None,
                  refusing_encryption: Sequence[str] | None = None) -> str:
    """The status page as a complete HTML document; ``health``, when given, is shown as
    what is working (the PBX link, alerts, inbox delivery), each with its last success and
    last error.

    ``now`` must be timezone-aware; times are shown in ``tz`` (an IANA name such as
    ``America/Chicago``; an unknown one raises ``zoneinfo.ZoneInfoNotFoundError``).
    """
    zone = ZoneInfo(tz)
    name = escape(practice_name)
    engaged = state.mode is Mode.OUTAGE
    word = "OUTAGE ENGAGED" if engaged else "NORMAL"
    css = _mode_class(state.mode)
    rows = backlog_by_kind(backlog)
    total = sum(rows.values())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{escape(word)} · {name} · Backline</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f"<h1>{name}: phone system status</h1>",
        f'<p class="mode {css}">{escape(word)}</p>',
        _since(state.since, now, zone),
        *(['<h2 class="mode outage">INSECURE: in the clear on the network</h2><ul>'
           + "".join(f"<li>{escape(line)}</li>" for line in insecure) + "</ul>"]
          if insecure else []),
        *(_refusing(refusing_encryption) if refusing_encryption else []),
        *(_health(health, zone) if health is not None else []),
        *(_hours(hours, zone) if hours else []),
        "<h2>Held for delivery to the inbox</h2>",
        '<table><thead><tr><th>Kind</th><th class="n">Held</th></tr></thead><tbody>',
        *(f"<tr><td>{escape(kind)}</td>{_count(n)}</tr>" for kind, n in rows.items()),
        f"<tr><th>total</th>{_count(total)}</tr>",
        "</tbody></table>",
        "<h2>Recent switches</h2>",
        _history(history, zone),
        *(_refused(refused, zone) if refused else []),
        *(_emergency(emergency_calls, zone) if emergency_calls is not None else []),
        f'<p class="quiet">As of {escape(_local(now, zone))}.</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _since(change: ModeChange | None, now: datetime, zone: ZoneInfo) -> str:
    if change is None:
        return "<p>The outage has never been engaged.</p>"
    items = [
        ("Since", f"{_local(change.at, zone)} ({_ago(now - change.at)})"),
        ("By", change.by),
        ("Via", via_words(change.via)),
        ("Why", change.reason or "(no reason given)"),
    ]
    return "<dl>" + "".join(f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>"
                            for label, value in items) + "</dl>"


def _refusing(phones: Sequence[str]) -> list[str]:
    return ['<h2 class="mode outage">Desk phones that do not ring: they refused the '
            "encrypted call</h2><ul>"
            + "".join(f"<li>{escape(p)}</li>" for p in phones)
            + f"</ul><p>Fix: {escape(FIX)}.</p>"]


def _health(health: Mapping[str, Health], zone: ZoneInfo) -> list[str]:
    rows = []
    for name, label in WATCHED.items():
        h = health.get(name)
        if h is None:
            continue
        success = _local(h.last_success, zone) if h.last_success else "never"
        error = (f"{_local(h.last_error_at, zone)}: {h.last_error}" if h.last_error_at
                 else "none")
        rows.append(f"<tr><td>{escape(label)}</td>"
                    f'<td class="{h.verdict.value}">{escape(h.says)}</td>'
                    f"<td>{escape(success)}</td><td>{escape(error)}</td></tr>")
    return ["<h2>What is working</h2>",
            "<table><thead><tr><th>Part</th><th>Now</th><th>Last success</th>"
            "<th>Last error</th></tr></thead><tbody>", *rows, "</tbody></table>"]


def _hours(rows: Sequence[HoursRow], zone: ZoneInfo) -> list[str]:
    body = []
    for row in rows:
        now, o = row.now, row.now.override
        why = now.why.value + (f" by {o.by} (via {o.via}) at {_local(o.at, zone)}"
                               if o is not None else "")
        until = _local(now.until, zone) if now.until else "no scheduled change"
        body.append(f"<tr><td>{escape(row.applies_to)}</td>"
                    f"<td>{escape(now.state.value)}</td><td>{escape(why)}</td>"
                    f"<td>{escape(until)}</td></tr>")
    return ["<h2>Hours</h2>", "<table><thead><tr><th>For</th><th>Now</th><th>Why</th>"
            "<th>Until</th></tr></thead><tbody>", *body, "</tbody></table>"]


def _history(history: list[ModeChange], zone: ZoneInfo) -> str:
    if not history:
        return '<p class="quiet">No switches recorded.</p>'
    head = ("<table><thead><tr><th>When</th><th>Mode</th><th>By</th><th>Via</th>"
            "<th>Why</th></tr></thead><tbody>")
    body = "".join(
        f'<tr class="{_mode_class(c.mode)}">'
        f"<td>{escape(_local(c.at, zone))}</td>"
        f'<td class="m">{escape(c.mode.value)}</td>'
        f"<td>{escape(c.by)}</td><td>{escape(via_words(c.via))}</td>"
        f"<td>{escape(c.reason)}</td></tr>"
        for c in history)
    return head + body + "</tbody></table>"


def _refused(refused: Sequence[RefusedSwitch], zone: ZoneInfo) -> list[str]:
    head = ("<table><thead><tr><th>When</th><th>Desk phone</th><th>Asked to</th>"
            "<th>Refused because</th></tr></thead><tbody>")
    body = "".join(
        f"<tr><td>{escape(_local(r.at, zone))}</td><td>{escape(r.desk_phone)}</td>"
        f"<td>{escape(r.action)}</td><td>{escape(r.why)}</td></tr>" for r in refused)
    return ["<h2>Refused desk-phone switches</h2>", head + body + "</tbody></table>"]


def _emergency(calls: Sequence[EmergencyCallRecord], zone: ZoneInfo) -> list[str]:
    if not calls:
        return ["<h2>Recent 911 calls</h2>", '<p class="quiet">None recorded.</p>']
    head = ("<table><thead><tr><th>When</th><th>Dialled</th><th>From</th><th>Where</th>"
            "</tr></thead><tbody>")
    body = "".join(
        f"<tr><td>{escape(_local(c.at, zone))}"
        f"{' (noticed late: the controller was away)' if c.late else ''}</td>"
        f"<td>{escape(c.dialled)}</td><td>{escape(c.who)}</td>"
        f"<td>{escape(c.location)}</td></tr>" for c in calls)
    return ["<h2>Recent 911 calls</h2>", head + body + "</tbody></table>"]


def _count(n: int) -> str:
    return f'<td class="n held">{n}</td>' if n else f'<td class="n">{n}</td>'


def _mode_class(mode: Mode) -> str:
    return "engaged" if mode is Mode.OUTAGE else "normal"


def via_words(via: Via) -> str:
    """Where a switch was made, as ops would say it."""
    match via:
        case Via.CLI:
            return "command line"
        case Via.CONSOLE:
            return "PBX console"
        case Via.DESK_PHONE:
            return "desk phone"
        case Via.CONTROLLER:
            return "controller"
        case _:
            assert_never(via)


def _local(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).strftime(_TIME)


def _ago(delta: timedelta) -> str:
    """``2 d 3 h``, ``3 h 12 min``, ``4 min``: how long the mode has held, to the minute."""
    if delta < timedelta(0):
        # The journal's clock and ours disagree slightly; never print a negative age.
        return "just now"
    minutes = int(delta.total_seconds()) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"for {days} d {hours} h"
    if hours:
        return f"for {hours} h {minutes} min"
    return f"for {minutes} min" if minutes else "just now"
