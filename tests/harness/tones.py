"""Audio a test can recognise: a sequence of pure tones, and a detector that finds it in
samples (what a phone recorded) or in packets (RTP payloads in a capture).

A tone lasts whole 20 ms frames and sits on a multiple of 50 Hz, so that in a 160-sample
frame (one G.711 RTP packet) it fills one DFT bin: the detector (Goertzel) says how much of
a frame's energy lies at each tone's frequency.  Speech, silence and encrypted payloads
(SRTP's are noise-like: about 2/160 of their energy in any bin) stay far below
``PURE``.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

FRAME = 160  # samples in 20 ms at 8 kHz: one G.711 packet
PURE = 0.6  # share of a frame's energy at one tone for the frame to count as that tone


def tone_samples(freqs: Sequence[int], frames_each: int = 12, level: int = 8000
                 ) -> list[int]:
    """``freqs`` one after another, each ``frames_each`` frames long."""
    out: list[int] = []
    for f in freqs:
        out += [int(level * math.sin(2 * math.pi * f * i / 8000))
                for i in range(FRAME * frames_each)]
    return out


def ulaw_bytes(samples: Iterable[int]) -> bytes:
    return bytes(_ulaw(s) for s in samples)


def _ulaw(sample: int) -> int:
    """ITU-T G.711 µ-law of a 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _unulaw(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


ULAW = [_unulaw(b) for b in range(256)]


def strongest(frame: Sequence[int], freqs: Sequence[int]) -> tuple[int, float]:
    """The tone of ``freqs`` holding the largest share of ``frame``'s energy, and that
    share (1.0: a pure tone on a bin)."""
    energy = sum(s * s for s in frame)
    if energy == 0:
        return 0, 0.0
    best, share = 0, 0.0
    n = len(frame)
    for f in freqs:
        coeff = 2 * math.cos(2 * math.pi * f / 8000)
        s1 = s2 = 0.0
        for x in frame:
            s1, s2 = x + coeff * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coeff * s1 * s2
        part = 2 * power / (n * energy)
        if part > share:
            best, share = f, part
    return best, share


def tones_in(samples: Sequence[int], freqs: Sequence[int]) -> list[int]:
    """The tones heard in ``samples``, frame by frame, repeats merged: [400, 650, ...]."""
    heard: list[int] = []
    for i in range(0, len(samples) - FRAME + 1, FRAME):
        f, share = strongest(samples[i:i + FRAME], freqs)
        if share >= PURE and (not heard or heard[-1] != f):
            heard.append(f)
    return heard


def holds_sequence(heard: Sequence[int], freqs: Sequence[int]) -> bool:
    """``freqs`` appear in ``heard`` one after another, in order."""
    n = len(freqs)
    return any(list(heard[i:i + n]) == list(freqs) for i in range(len(heard) - n + 1))


def udp_payloads(pcap: Path) -> list[bytes]:
    """Every UDP payload in ``pcap`` except SIP's port (tshark)."""
    done = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", "udp && !(udp.port == 5060)",
                           "-T", "fields", "-e", "udp.payload"],
                          capture_output=True, text=True, check=True, timeout=120)
    return [bytes.fromhex(line.replace(":", "")) for line in done.stdout.split()]


def rtp_frames_with_tones(payloads: Iterable[bytes], freqs: Sequence[int]) -> list[int]:
    """The tone of each payload that, read as RTP carrying G.711 µ-law (a 12-byte header
    and 160 samples), is one of ``freqs``: what a listener on the wire would hear."""
    found = []
    for payload in payloads:
        if len(payload) < 12 + FRAME:
            continue
        samples = [ULAW[b] for b in payload[12:12 + FRAME]]
        f, share = strongest(samples, freqs)
        if share >= PURE:
            found.append(f)
    return found
