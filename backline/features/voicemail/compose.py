"""What a voicemail email says.  Pure: everything comes in as arguments.

**No patient data.**  The email names the practice, the line (its caller-ID name, the
practice's own words) and the time, and carries a link: no caller number or name, no audio,
not even how long the message is.  Nothing here is handed the message itself.  Email travels
through servers the practice does not control; the page behind the link is where the caller
and the recording are, for ``backup.link_hours``, and every view is audited.
"""

from __future__ import annotations

import textwrap
from datetime import datetime
from email.message import EmailMessage
from html import escape

from backline.features.alerts.compose import automatic_email, local_time


def voicemail_email(*, practice: str, line: str, sender: str, to: str, message_id: str,
                    left_at: datetime, sent_at: datetime, tz: str, link: str,
                    link_hours: int) -> EmailMessage:
    """The email to one member about one message: plain text and an HTML alternative."""
    name = " ".join(practice.split())[:80]
    line = " ".join(line.split())[:40] or "a practice line"
    when = local_time(left_at, tz)
    message = automatic_email(sender=sender, to=to, message_id=message_id, sent_at=sent_at,
                              subject=f"New voicemail on {line} ({name})")
    message.set_content("\n\n".join([
        textwrap.fill(f"{name}: a new voicemail was left on {line} at {when}.", 72),
        f"Listen to it here; the link works for {link_hours} hours:",
        link,
        textwrap.fill("Do not forward this email: anyone with the link can open the page. "
                      "This email itself holds no patient information.", 72),
    ]) + "\n")
    message.add_alternative(
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        "<meta name=\"referrer\" content=\"no-referrer\"></head><body>"
        f"<p>{escape(name)}: a new voicemail was left on {escape(line)} at {escape(when)}.</p>"
        f"<p><a href=\"{escape(link, quote=True)}\" rel=\"noreferrer\">Listen to it here</a>; "
        f"the link works for {link_hours} hours.</p>"
        "<p>Do not forward this email: anyone with the link can open the page. This email "
        "itself holds no patient information.</p></body></html>\n", subtype="html")
    return message
