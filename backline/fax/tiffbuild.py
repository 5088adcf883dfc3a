"""Assemble small TIFF files from tags and already-coded strips.

Used to hand Pillow one page at a time, carrying only tags we have checked (see `fax.ccitt`), and
by the tests to make fax TIFFs as real fax software writes them (WhiteIsZero, LSB-first fill
order, big-endian), which Pillow itself cannot write directly.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from backline.fax.tiff import Tag

# Field types of the tags we write. Everything else is a SHORT.
_LONG_TAGS = frozenset(
    {
        Tag.NEW_SUBFILE_TYPE,
        Tag.IMAGE_WIDTH,
        Tag.IMAGE_LENGTH,
        Tag.STRIP_OFFSETS,
        Tag.ROWS_PER_STRIP,
        Tag.STRIP_BYTE_COUNTS,
        Tag.T4_OPTIONS,
        Tag.T6_OPTIONS,
    }
)
_RATIONAL_TAGS = frozenset({Tag.X_RESOLUTION, Tag.Y_RESOLUTION})
_SHORT, _LONG, _RATIONAL = 3, 4, 5


@dataclass(frozen=True)
class PageSpec:
    """One directory to write: its tags (without strip offsets/counts) and its coded strips.

    Integer tags hold ints; resolution tags may hold a float, written as a RATIONAL.
    """

    tags: Mapping[int, int | float]
    strips: Sequence[bytes]


def build_tiff(pages: Sequence[PageSpec], *, big_endian: bool = False) -> bytes:
    """Return a TIFF holding `pages` in order; StripOffsets/StripByteCounts are filled in here."""
    order = ">" if big_endian else "<"
    out = bytearray(b"MM\x00\x2a" if big_endian else b"II\x2a\x00")
    out += b"\0\0\0\0"  # first IFD offset, patched below
    link = 4  # where the pointer to the next IFD goes
    for page in pages:
        offsets = []
        for strip in page.strips:
            offsets.append(len(out))
            out += strip
            if len(out) % 2:
                out += b"\0"  # IFDs and values must start on a word boundary
        tags: dict[int, tuple[int, tuple[int, ...]]] = {}
        for tag, value in page.tags.items():
            tags[tag] = _field(tag, value)
        tags[Tag.STRIP_OFFSETS] = (_LONG, tuple(offsets))
        tags[Tag.STRIP_BYTE_COUNTS] = (_LONG, tuple(len(s) for s in page.strips))
        ifd_offset = len(out)
        struct.pack_into(order + "I", out, link, ifd_offset)
        entries = sorted(tags.items())  # TIFF requires ascending tag order
        out += struct.pack(order + "H", len(entries))
        values_at = ifd_offset + 2 + 12 * len(entries) + 4
        extra = bytearray()
        for tag, (kind, values) in entries:
            code = {_SHORT: "H", _LONG: "I", _RATIONAL: "I"}[kind]
            packed = struct.pack(f"{order}{len(values)}{code}", *values)
            count = len(values) // 2 if kind == _RATIONAL else len(values)
            out += struct.pack(order + "HHI", tag, kind, count)
            if len(packed) <= 4:
                out += packed.ljust(4, b"\0")
            else:
                out += struct.pack(order + "I", values_at + len(extra))
                extra += packed
        link = len(out)
        out += b"\0\0\0\0"  # next IFD offset: zero unless another page follows
        out += extra
    return bytes(out)


def _field(tag: int, value: int | float) -> tuple[int, tuple[int, ...]]:
    if tag in _RATIONAL_TAGS:
        ratio = Fraction(value).limit_denominator(10_000)
        return _RATIONAL, (ratio.numerator, ratio.denominator)
    if not isinstance(value, int):
        raise TypeError(f"tag {tag} needs an int, got {value!r}")
    return (_LONG if tag in _LONG_TAGS else _SHORT), (value,)
