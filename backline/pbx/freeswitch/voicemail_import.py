"""Messages left in FreeSWITCH's voicemail while the controller was away, taken in after
every login.

mod_voicemail's ``vm::maintenance`` event reaches only the listeners connected when it fires:
a message left while the controller was down, or while its link was, is told to nobody.
mod_voicemail keeps the message in its own database all the same, and ``vm_list BOX@DOMAIN``
lists a box's messages (mod_voicemail.c, voicemail_list_api_function), each with the same
uuid as the event's ``VM-UUID``.  So, as the Asterisk driver reads app_voicemail's spool at
every login, every voice number's box is listed at every login and each message goes to the
voicemail intake, which passes over what is already journaled (told by the event, or by an
earlier login).
"""

from __future__ import annotations

import logging
from typing import Final

from backline.core.model import Directory
from backline.core.voicemail import voicemail_boxes
from backline.pbx.freeswitch.hub import EslCommandFailed, EslHub, EslLinkDown
from backline.pbx.freeswitch.voicemail import listed_messages
from backline.pbx.ports import VoicemailDesk

log = logging.getLogger("backline.freeswitch")

# api_exec (mod_event_socket.c) answers so when a command printed nothing: vm_list for a box
# with no messages.
_NO_REPLY: Final = "-ERR no reply"


async def take_left_while_away(hub: EslHub, directory: Directory, domain: str,
                               desk: VoicemailDesk) -> int:
    """Every box's listed messages to ``desk``; how many were new.  Never raises: a link
    that drops, or a message that cannot be taken in now, waits for the next login."""
    new = 0
    for box in voicemail_boxes(directory):
        try:
            text = await hub.api("vm_list", f"{box}@{domain}")
        except EslCommandFailed as exc:
            if exc.reply.strip() != _NO_REPLY:
                log.warning("could not list voicemail box %s: %s", box, exc.reply.strip())
            continue
        except EslLinkDown:
            return new
        for message, audio in listed_messages(text, box, domain):
            try:
                new += await desk.message_left(message, audio)
            except Exception:
                log.exception("voicemail %s could not be taken in; the next login tries again",
                              message.msg_id)
                return new
    if new:
        log.warning("%d voicemail message(s) left while the controller was away are now "
                    "journaled", new)
    return new
