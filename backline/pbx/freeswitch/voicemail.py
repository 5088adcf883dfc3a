"""A message left in FreeSWITCH's voicemail, as the controller's voicemail intake takes it.
Pure.

mod_voicemail (src/mod/applications/mod_voicemail/mod_voicemail.c, deliver_vm) fires the
CUSTOM event ``vm::maintenance`` with ``VM-Action: leave-message`` once the recording is
closed and on disk, just before it files the message in its own database; it fires nothing
for a recording under the profile's ``min-record-len``, which it deletes.  The headers:
``VM-User`` (the box: the directory user's id), ``VM-Domain``, ``VM-Caller-ID-Name``,
``VM-Caller-ID-Number``, ``VM-File-Path`` (``msg_UUID.EXT`` in the box's folder),
``VM-Flags``, ``VM-Folder``, ``VM-UUID`` (for a message left on a call, the call's own
uuid), ``VM-Message-Len`` (seconds) and ``VM-Timestamp`` (epoch seconds), then the channel's
data.  The message is keyed by ``VM-UUID``, so a repeated event files nothing twice.

The caller's number is untrusted (cut, kept as data); the caller's name is not kept, as on
Asterisk (``backline.core.voicemail.caller_number``).  The path is checked for the shape
mod_voicemail gives it before the controller reads a byte of it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from backline.core.voicemail import NotAMessage, VoicemailMessage, caller_number
from backline.pbx.freeswitch import names, wire
from backline.pbx.freeswitch.commands import BOX, PATH

LEAVE_MESSAGE: Final = "leave-message"
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                          r"[0-9a-fA-F]{12}")
# deliver_vm's file for a message left on a call: msg_UUID.EXT, EXT the profile's
# file-extension (the rendered voicemail.conf.xml says wav).
_FILE_NAME: Final = re.compile(r"msg_[0-9a-fA-F-]{36}\.wav")
_SECONDS: Final = re.compile(r"[0-9]{1,9}")
_EPOCH: Final = re.compile(r"[0-9]{1,11}")
_EPOCH_MICROS: Final = re.compile(r"[0-9]{1,17}")


def left_message(event: wire.Event, domain: str) -> tuple[VoicemailMessage, Path] | None:
    """The message a ``vm::maintenance`` event reports and where FreeSWITCH keeps its
    recording (the path it names; nothing here reads it), or None when it reports none of
    ours (another action, another domain than ``domain``).  NotAMessage when it says a
    message was left but not in the shape mod_voicemail gives one."""
    if event.subclass != names.VOICEMAIL_EVENT or event.get("VM-Action") != LEAVE_MESSAGE:
        return None
    if (event.get("VM-Domain") or "").lower() != domain.lower():
        return None
    return _message(event.get("VM-User") or "", event.get("VM-UUID") or "",
                    event.get("VM-File-Path") or "", event.get("VM-Caller-ID-Number") or "",
                    _left_at(event), event.get("VM-Message-Len"))


def listed_messages(text: str, box: str, domain: str) -> list[tuple[VoicemailMessage, Path]]:
    """The messages ``vm_list BOX@DOMAIN`` prints (mod_voicemail.c, api_list_callback: one
    line each, ``created_epoch:read_epoch:username:domain:in_folder:file_path:uuid:cid_name:
    cid_number:message_len``), each as :func:`left_message` gives it.  The caller's name and
    number are the caller's to choose and may hold ``:``: the columns around them are read
    from both ends, and a line not in that shape, or of another box, is skipped."""
    found: list[tuple[VoicemailMessage, Path]] = []
    for line in text.splitlines():
        head = line.split(":", 7)
        tail = head[-1].rsplit(":", 1) if len(head) == 8 else []
        if len(tail) != 2 or not _EPOCH.fullmatch(head[0]):
            continue
        user, in_domain, path, uuid = head[2], head[3], head[5], head[6]
        if user != box or in_domain.lower() != domain.lower():
            continue
        try:
            found.append(_message(user, uuid, path, tail[0].rpartition(":")[2],
                                  datetime.fromtimestamp(int(head[0]), UTC), tail[1]))
        except NotAMessage:
            continue
    return found


def _message(box: str, uuid: str, path: str, caller: str, at: datetime,
             seconds: str | None) -> tuple[VoicemailMessage, Path]:
    if not BOX.fullmatch(box):
        raise NotAMessage("VM-User is not a box of ours")
    if not _UUID.fullmatch(uuid):
        raise NotAMessage("VM-UUID is not a uuid")
    audio = Path(path)
    if not PATH.fullmatch(path) or ".." in audio.parts or not _FILE_NAME.fullmatch(audio.name):
        raise NotAMessage("VM-File-Path is not where mod_voicemail keeps a message")
    return VoicemailMessage(msg_id=uuid.lower(), box=box, caller=caller_number(caller), at=at,
                            channel="", seconds=_seconds(seconds)), audio


def _left_at(event: wire.Event) -> datetime:
    """VM-Timestamp (epoch seconds), else the event's own Event-Date-Timestamp (µs)."""
    stamp = event.get("VM-Timestamp") or ""
    if _EPOCH.fullmatch(stamp):
        return datetime.fromtimestamp(int(stamp), UTC)
    micros = event.get("Event-Date-Timestamp") or ""
    if _EPOCH_MICROS.fullmatch(micros):
        return datetime.fromtimestamp(int(micros) / 1_000_000, UTC)
    raise NotAMessage("no VM-Timestamp")


def _seconds(text: str | None) -> int:
    return int(text) if text and _SECONDS.fullmatch(text) else 0
