"""The outage announcement as audio Asterisk plays: 8 kHz, mono, 16-bit signed WAV.

Text is spoken by espeak-ng; a recording is converted by sox.  espeak-ng writes 22.05 kHz,
which Asterisk refuses ("frequency mismatch"), hence the conversion either way.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from backline.core.emergency import emergency_callers, spoken_notice
from backline.core.hours import closed_clip
from backline.core.model import Announcement, Carry, Directory
from backline.core.voicemail import greeting_clip, greeting_of
from backline.render.hold_music import HOLD_MUSIC, hold_music_wav


class AnnouncementError(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
    except FileNotFoundError as exc:
        raise AnnouncementError(f"{argv[0]} is not installed (scripts/setup.sh installs it)"
                                ) from exc
    except subprocess.CalledProcessError as exc:
        raise AnnouncementError(f"{argv[0]} failed: {exc.stderr.decode(errors='replace')[-300:]}"
                                ) from exc


def render_announcement(announcement: Announcement, out: Path, base: Path) -> Path:
    """Write ``out`` (a .wav Asterisk can play); ``base`` resolves a relative recording."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if announcement.file:
            source = Path(announcement.file)
            source = source if source.is_absolute() else base / source
            if not source.exists():
                raise AnnouncementError(f"backup.announcement.file: {source} does not exist")
        else:
            source = Path(tmp) / "spoken.wav"
            # The text goes to espeak-ng on stdin-free argv, never through a shell.
            _run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(source),
                  announcement.text])
        _run(["sox", str(source), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
              str(out)])
    return out


def render_notice_clips(d: Directory, sounds: Path) -> list[Path]:
    """The spoken part of the 911 notice a desk phone hears, one clip per desk phone
    (``emergency-PHONE.wav``: who and where; the PBX says the time after it).  Only when
    ``emergency.notify`` names desk phones: otherwise nobody hears them."""
    if not d.emergency.notify.desk_phones:
        return []
    out = []
    for caller in emergency_callers(d):
        path = sounds / f"emergency-{caller.desk_phone}.wav"
        render_announcement(Announcement(text=spoken_notice(caller, d.practice.name)), path,
                            sounds)
        out.append(path)
    return out


def render_closed_clips(d: Directory, sounds: Path) -> list[Path]:
    """The closed announcement of each voice number whose hours end in voicemail
    (``closed-DIGITS.wav``, see closed_clip); a number forwarded when closed has none."""
    out = []
    for number in d.numbers:
        hours = d.hours_of(number.number)
        if hours is None or hours.closed.forward_to or Carry.VOICE not in number.carries:
            continue
        path = sounds / f"{closed_clip(number.number)}.wav"
        render_announcement(hours.closed.announcement, path, Path(d.source).parent)
        out.append(path)
    return out


def render_greeting_clips(d: Directory, sounds: Path) -> list[Path]:
    """The voicemail greeting of each voice number (``greeting-BOX.wav``, see greeting_clip):
    its ``voicemail_greeting`` (text or a recording), or the default."""
    out = []
    for number in d.numbers:
        if Carry.VOICE not in number.carries or not number.voicemail_box:
            continue
        path = sounds / f"{greeting_clip(number.voicemail_box)}.wav"
        if path in out:
            continue  # two numbers sharing a box: the first one's greeting
        render_announcement(greeting_of(number, d.practice.name), path, Path(d.source).parent)
        out.append(path)
    return out


def write_hold_music(sounds: Path) -> Path:
    """Write the hold music (``hold-music.wav``, backline.render.hold_music) into
    ``sounds``, created if need be; return its path."""
    sounds.mkdir(parents=True, exist_ok=True)
    path = sounds / f"{HOLD_MUSIC}.wav"
    path.write_bytes(hold_music_wav())
    return path
