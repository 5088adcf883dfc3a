"""mod_voicemail's configuration, rendered in place of the stock ``voicemail.conf.xml``.
Pure.

Each voice number's box is a directory user (``backline.render.freeswitch.directory_xml``);
the driver sends unanswered calls to ``voicemail default DOMAIN BOX`` and a member's ``*97``
to ``voicemail check auth default DOMAIN BOX`` (``backline.pbx.freeswitch.commands``).  This
file is the ``default`` profile they name (mod_voicemail.c, load_profile: ``profiles``, then
the ``profile`` by name, its ``param`` children), with only what Backline relies on:

* ``file-extension: wav``: the recording the ``vm::maintenance`` event names is a WAVE file,
  which the controller checks and the inbox and link pages play (``audio/wav``);
* ``max-record-len: 180``: as Asterisk's ``maxsecs``;
* ``min-record-len: 1``: as Asterisk's ``minsecs``.  create_file (mod_voicemail.c) takes the
  recording's whole seconds (samples over the sample rate) and deletes one under this, keeps
  no message and fires no event: a caller who hangs up at the beep is a missed call.  The
  default, 3, also threw away a message of one or two seconds ("call me back").
* no ``operator-key`` or ``vmain-key`` (mod_voicemail's defaults are none): the stock file
  sets ``9`` and ``*``, which send a caller who presses them during the greeting to the
  stock ``default`` context (an operator extension, the voicemail login), out of the
  practice's dialplan;
* ``login-keys: none``: a caller who presses one of the login keys during the greeting is
  taken to the box's login (voicemail_leave_main, ``switch_stristr(buf, login_keys)``, then
  voicemail_check_main), and the default is ``0``.  An empty value does not clear it: the
  param is dropped as the profile loads (switch_event_base_add_header deletes a header set
  to ""), so the default comes back.  ``none`` is kept (its check, ``[0-9#\\*]*``, is matched
  unanchored, which any text passes) and none of its letters is a key a phone can send
  (``is_dtmf`` in switch_utils.h: digits, ``A``-``D``, ``*``, ``#``, ``F``, ``W``).

No box has ``vm-mailto`` or ``vm-notify-mailto``, so FreeSWITCH itself emails nobody: members
are told by Backline, with a link and never the audio or the caller.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from backline.pbx.freeswitch import names
from backline.render.asterisk import RenderedFile
from backline.render.freeswitch import _include, _params, _text

VOICEMAIL_FILE = "autoload_configs/voicemail.conf.xml"
MAX_RECORD_SECONDS = 180
MIN_RECORD_SECONDS = 1  # shorter is deleted by mod_voicemail, and no event fires
# No key a caller can press (see above): not "", which gives back the default "0".
NO_LOGIN_KEYS = "none"


def voicemail_xml() -> str:
    doc = _include()
    conf = ET.SubElement(doc, "configuration", name="voicemail.conf", description="Voicemail")
    ET.SubElement(conf, "settings")
    profile = ET.SubElement(ET.SubElement(conf, "profiles"), "profile",
                            name=names.VOICEMAIL_PROFILE)
    _params(profile, {"file-extension": "wav",
                      "min-record-len": str(MIN_RECORD_SECONDS),
                      "max-record-len": str(MAX_RECORD_SECONDS),
                      "login-keys": NO_LOGIN_KEYS}, tag=None)
    return _text(doc)


def voicemail_file() -> RenderedFile:
    return RenderedFile(VOICEMAIL_FILE, voicemail_xml())
