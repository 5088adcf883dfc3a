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

LEAVE_MESSAGE: Final = "leave-message"
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                          r"[0-9a-fA-F]{12}")
_BOX: Final = re.compile(r"[0-9A-Za-z_-]{1,40}")
_PATH: Final = re.compile(r"/[A-Za-z0-9_./-]{1,255}")
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
    box = event.get("VM-User") or ""
    uuid = event.get("VM-UUID") or ""
    path = event.get("VM-File-Path") or ""
    if not _BOX.fullmatch(box):
        raise NotAMessage("VM-User is not a box of ours")
    if not _UUID.fullmatch(uuid):
        raise NotAMessage("VM-UUID is not a uuid")
    audio = Path(path)
    if not _PATH.fullmatch(path) or ".." in audio.parts or not _FILE_NAME.fullmatch(audio.name):
        raise NotAMessage("VM-File-Path is not where mod_voicemail keeps a message")
    return VoicemailMessage(
        msg_id=uuid.lower(), box=box,
        caller=caller_number(event.get("VM-Caller-ID-Number") or ""),
        at=_left_at(event), channel="", seconds=_seconds(event.get("VM-Message-Len"))), audio


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
