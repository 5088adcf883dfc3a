"""Hold music: what a parked caller hears while waiting, so a silent line is never mistaken
for a dropped call.  Made here (a slow arpeggio of soft sine tones, 8 kHz 16-bit mono WAV,
the format Asterisk plays without converting), not fetched: the PBX root ships no music.
Pure: the same bytes every time (backline.localpbx.announcement.write_hold_music writes
them beside the announcement).
"""

from __future__ import annotations

import io
import math
import struct
import wave

HOLD_MUSIC = "hold-music"  # the name (no extension) beside the outage announcement
RATE = 8000
# C major then A minor, each note 0.45 s with a soft attack and decay: about 7 s, looped.
NOTES = (261.63, 329.63, 392.00, 523.25, 392.00, 329.63, 261.63, 0.0,
         220.00, 261.63, 329.63, 440.00, 329.63, 261.63, 220.00, 0.0)
NOTE_SECONDS = 0.45
LEVEL = 6000  # of 32767: quiet, well under clipping after G.711


def hold_music_wav() -> bytes:
    """The hold music as a WAV file's bytes."""
    frames = bytearray()
    per_note = int(RATE * NOTE_SECONDS)
    for freq in NOTES:
        for i in range(per_note):
            envelope = min(1.0, i / 400) * min(1.0, (per_note - i) / 1600)
            value = LEVEL * envelope * math.sin(2 * math.pi * freq * i / RATE) if freq else 0
            frames += struct.pack("<h", int(value))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))
    return out.getvalue()
