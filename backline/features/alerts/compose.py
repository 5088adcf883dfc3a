"""What an alert says: the email and the SMS text.  Pure: everything comes in as arguments.

**No patient data.**  An alert carries the practice's name, a time and a link, and nothing
about the attempts: no caller number or name, no SMS text, no fax, no station ID, not even
how many there were.  That is enforced by the signatures: nothing here is handed an attempt.
Email travels through servers the practice does not control and SMS is read on lock screens;
the page behind the link is where the details are, for 12 hours, and every view is audited.
"""

from __future__ import annotations

import secrets
import textwrap
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from html import escape
from zoneinfo import ZoneInfo

PRACTICE_NAME_CHARS = 80
SMS_PRACTICE_CHARS = 40  # keeps the whole text in one 160-character GSM segment


def new_message_id(sender: str) -> str:
    """A Message-ID for one alert to one recipient, fixed before its first try.

    Random rather than built from the alert's id, so that two practices' journals (both
    starting at id 1) sending through one mail system cannot collide.
    """
    domain = sender.rpartition("@")[2] or "backline.invalid"
    return f"<alert.{secrets.token_hex(12)}@{_header_safe(domain, 200)}>"


def automatic_email(*, sender: str, to: str, subject: str, sent_at: datetime,
                    message_id: str) -> EmailMessage:
    """An email Backline sends on its own (an alert, a reminder): the headers, no body yet.
    ``Auto-Submitted`` (RFC 3834) and ``X-Auto-Response-Suppress`` tell autoresponders and
    vacation replies not to answer."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    return message


def local_time(at: datetime, tz: str) -> str:
    """``at`` as the practice reads it: "Mon 02 Mar 2026, 09:15 CST"."""
    return at.astimezone(ZoneInfo(tz)).strftime("%a %d %b %Y, %H:%M %Z")


def alert_email(*, practice: str, sender: str, to: str, message_id: str, alert_at: datetime,
                sent_at: datetime, tz: str, link: str, link_hours: int) -> EmailMessage:
    """The alert email: plain text and an HTML alternative, no images or remote content."""
    name = _header_safe(practice, PRACTICE_NAME_CHARS)
    when = local_time(alert_at, tz)
    message = automatic_email(sender=sender, to=to, message_id=message_id, sent_at=sent_at,
                              subject=f"Backup alert: new inbound activity for {name}")
    # Short lines, the link alone on its own: then an ASCII alert goes as 7bit, and the link
    # is never cut by a quoted-printable soft break in a mail client that shows the source.
    # The attempts' own mode, never the mode now: an alert gathered a moment after the
    # outage ended is still about activity from during it (only those raise an alert).
    message.set_content("\n\n".join([
        textwrap.fill(f"{name}: new inbound activity (calls, texts or faxes) came in while "
                      f"the phone system was in backup (outage) mode, up to {when}.", 72),
        f"See it here; the link works for {link_hours} hours:",
        link,
        textwrap.fill("Do not forward this email: anyone with the link can open the page. "
                      "This alert itself holds no patient information.", 72),
    ]) + "\n")
    message.add_alternative(
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        "<meta name=\"referrer\" content=\"no-referrer\"></head><body>"
        f"<p>{escape(name)}: new inbound activity (calls, texts or faxes) came in while the "
        f"phone system was in backup (outage) mode, up to {escape(when)}.</p>"
        f"<p><a href=\"{escape(link, quote=True)}\" rel=\"noreferrer\">See it here</a>; "
        f"the link works for {link_hours} hours.</p>"
        "<p>Do not forward this email: anyone with the link can open the page. "
        "This alert itself holds no patient information.</p></body></html>",
        subtype="html")
    return message


def alert_sms(practice: str) -> str:
    """The text to each SMS recipient: that there is activity, and to check email.  No link:
    a lock screen shows it to whoever is near the phone."""
    name = _header_safe(practice, SMS_PRACTICE_CHARS)
    return f"{name}: new inbound activity during the phone outage. Check your email for the alert."


def _header_safe(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters: header injection needs a line break."""
    return " ".join(text.split())[:limit]
