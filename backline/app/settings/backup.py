"""``backup:``: what outage mode plays, replies and alerts, and for how long links live."""

from __future__ import annotations

from backline.app.settings.reader import EMAIL, Reader, entry, where_of
from backline.app.yamlsource import YMap, YScalar
from backline.core.model import AlertKind, Alerts, Announcement, Backup

# A reminder nags every admin by email and SMS: more often than every quarter hour is a typo
# (0.0001 h would send one every 0.36 s), and less often than weekly is no reminder at all.
MIN_REMINDER_HOURS = 0.25
MAX_REMINDER_HOURS = 168


def read_backup(r: Reader, top: YMap) -> Backup:
    node = r.mapping(entry(top, "backup"), "backup", top.where)
    if node is None:
        return Backup()
    r.keys(node, "backup", ["announcement", "sms_reply", "alerts", "link_hours",
                            "pin_env", "pin_file", "reminder_hours"])
    default = Backup()
    announcement = read_announcement(r, node, "backup.announcement", default.announcement)
    sms_reply = r.text(node, "sms_reply", "backup.sms_reply", default.sms_reply,
                       "the text of the SMS auto-reply") or default.sms_reply
    alerts = Alerts()
    al = r.mapping(entry(node, "alerts"), "backup.alerts", node.where)
    if al is not None:
        r.keys(al, "backup.alerts", ["kind", "emails", "sms"])
        kind_text = r.text(al, "kind", "backup.alerts.kind", "email", "email or email+sms")
        try:
            kind = AlertKind(kind_text)
        except ValueError:
            r.problem(where_of(al, "kind"), "backup.alerts.kind", "email or email+sms")
            kind = AlertKind.EMAIL
        emails = r.strings(al, "emails", "backup.alerts.emails", EMAIL, "an email address")
        sms = r.e164_numbers(al, "sms", "backup.alerts.sms")
        if kind is AlertKind.EMAIL_SMS and not sms:
            r.problem(where_of(al, "kind"), "backup.alerts.sms",
                      "at least one SMS number when kind is email+sms")
        alerts = Alerts(kind, tuple(e for e, _ in emails), tuple(sms))
    hours = r.integer(node, "link_hours", "backup.link_hours", 12, 1, 72) or 12
    reminder_hours = default.reminder_hours
    reminder = entry(node, "reminder_hours")
    if reminder is not None:
        value = reminder.value if isinstance(reminder, YScalar) else None
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and MIN_REMINDER_HOURS <= value <= MAX_REMINDER_HOURS:
            reminder_hours = float(value)
        else:
            r.problem(reminder.where, "backup.reminder_hours",
                      f"a positive number of hours from {MIN_REMINDER_HOURS} to "
                      f"{MAX_REMINDER_HOURS} (e.g. 4 or 0.5)")
    return Backup(announcement, sms_reply, alerts, hours,
                  r.secret(node, "pin", "backup", False), reminder_hours)


def read_announcement(r: Reader, parent: YMap, f: str, default: Announcement, *,
                      key: str = "announcement") -> Announcement:
    """``announcement: {text: ...}`` (rendered to audio) or ``{file: ...}`` (a recording);
    ``key`` names the entry (a number's ``voicemail_greeting`` has the same shape)."""
    ann = r.mapping(entry(parent, key), f, parent.where)
    if ann is None:
        return default
    r.keys(ann, f, ["text", "file"])
    text = r.text(ann, "text", f"{f}.text", "", "text") or ""
    file = r.text(ann, "file", f"{f}.file", "", "a path") or ""
    if bool(text) == bool(file):
        r.problem(ann.where, f, "exactly one of text: (rendered to audio) or file: (a recording)")
    return Announcement(text, file)
