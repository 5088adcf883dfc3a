"""Read the structure of a fax TIFF (pages, geometry, where the coded data is) without decoding.

Why our own reader rather than Pillow's: every size and count is checked against a bound *before*
anything is decompressed, so a hostile or broken file (huge declared size, endless or looping page
chain, strips pointing past the end) is refused cheaply with a reason. It also hands out the raw
CCITT strips, which lets most pages go into the PDF without being decoded at all.

Only the tags a bi-level fax page needs are read; everything else in the file is ignored.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from backline.fax.errors import UnreadableTiff

# Bounds, checked before any decoding. A fax line is at most 4864 pixels (A3 at 16 dots/mm), so
# the width bound costs nothing real; 16384 lines is 167 in at standard or 42 in at superfine.
# The pixel bound (1728 x 16384 fits, and so does A3 at 16 dots/mm and 391 lpi for 17 in) keeps
# a page Pillow decodes, at one byte a pixel, under 32 MB. 200 pages is far beyond any fax a
# practice gets; a longer file is refused (and kept) rather than tying up a worker for minutes.
# Every page is decoded as the check that it can be (`fax.decodecheck`), so the pixels of all
# pages together are bounded too: 200 pages of 1728 x 4000 (200 superfine Letter pages are
# 1728 x 4300 each, but such a fax takes over three hours to send).
MAX_WIDTH = 4864
MAX_LINES = 16384
MAX_PAGE_PIXELS = 32 * 2**20
MAX_PAGES = 200
MAX_TOTAL_PIXELS = MAX_PAGES * 1728 * 4000
# A page's strips: no more than one per line, which real writers never exceed.
MAX_STRIPS = MAX_LINES


class Compression(IntEnum):
    """TIFF compression schemes a bi-level fax page may arrive in."""

    NONE = 1
    CCITT_RLE = 2  # Modified Huffman without EOLs, as some fax software stores it
    GROUP3 = 3  # T.4, 1D or 2D according to T4Options
    GROUP4 = 4  # T.6
    PACKBITS = 32773


class Tag(IntEnum):
    """The TIFF tags we read or write (baseline, plus the CCITT and TIFF-F fax ones)."""

    NEW_SUBFILE_TYPE = 254
    IMAGE_WIDTH = 256
    IMAGE_LENGTH = 257
    BITS_PER_SAMPLE = 258
    COMPRESSION = 259
    PHOTOMETRIC = 262
    FILL_ORDER = 266
    STRIP_OFFSETS = 273
    SAMPLES_PER_PIXEL = 277
    ROWS_PER_STRIP = 278
    STRIP_BYTE_COUNTS = 279
    X_RESOLUTION = 282
    Y_RESOLUTION = 283
    T4_OPTIONS = 292
    T6_OPTIONS = 293
    RESOLUTION_UNIT = 296
    TILE_WIDTH = 322
    CLEAN_FAX_DATA = 327


class Photometric(IntEnum):
    """Which bit value is white. Fax TIFFs (TIFF-F) are WhiteIsZero; Pillow writes BlackIsZero."""

    WHITE_IS_ZERO = 0
    BLACK_IS_ZERO = 1


_RESOLUTION_UNIT_NONE = 1
_RESOLUTION_UNIT_CM = 3
_REDUCED_RESOLUTION = 1  # NewSubfileType bit: a thumbnail of another page, not a page
_CLEAN, _REGENERATED, _UNCLEAN = 0, 1, 2  # CleanFaxData values

# Field types: (struct code, size in bytes). RATIONAL is two LONGs.
_TYPES: dict[int, tuple[str, int]] = {
    1: ("B", 1),  # BYTE
    3: ("H", 2),  # SHORT
    4: ("I", 4),  # LONG
    5: ("I", 8),  # RATIONAL
}
_WANTED = frozenset(int(t) for t in Tag)
_E = TypeVar("_E", bound=IntEnum)


@dataclass(frozen=True)
class TiffPage:
    """One page as declared by its directory. Nothing here has been decoded yet.

    `x_dpi`/`y_dpi` are what the file says (None if absent or unusable); `fax.geometry` decides
    what to believe. `strips` are (offset, length) pairs, all checked to lie inside the file.
    `clean` is the writer's word (TIFF-F CleanFaxData) that no coded line is damaged, either as
    received or because it regenerated the bad ones, as spandsp does.
    """

    number: int
    width: int
    height: int
    compression: Compression
    photometric: Photometric
    fill_order: int
    t4_options: int
    t6_options: int
    rows_per_strip: int
    strips: tuple[tuple[int, int], ...]
    x_dpi: float | None
    y_dpi: float | None
    clean: bool

    def strip_data(self, tiff: bytes) -> list[bytes]:
        """Slice this page's coded strips out of the file it was read from."""
        return [tiff[offset : offset + length] for offset, length in self.strips]


def read_pages(tiff: bytes) -> tuple[TiffPage, ...]:
    """Return the pages of a fax TIFF, in file order.

    Raises UnreadableTiff with the reason when the file is not a TIFF, is truncated, loops,
    exceeds a bound, shares image data between pages, or holds a page that is not a bi-level
    strip image we can convert.
    """
    reader = _Reader(tiff)
    pages: list[TiffPage] = []
    seen: set[int] = set()
    pixels = 0
    offset = reader.first_ifd()
    while offset != 0:
        if offset in seen:
            # A next-IFD pointer back into the chain would make a naive reader loop forever.
            raise UnreadableTiff(f"page directory chain loops back to offset {offset}")
        seen.add(offset)
        if len(seen) > MAX_PAGES:
            raise UnreadableTiff(f"more than {MAX_PAGES} page directories")
        tags, offset = reader.ifd(offset, len(pages) + 1)
        subfile = _single(tags, Tag.NEW_SUBFILE_TYPE, 0)
        if subfile & _REDUCED_RESOLUTION:
            continue  # a preview of another page; its content is already in that page
        pages.append(_page(tags, len(pages) + 1, len(tiff)))
        pixels += pages[-1].width * pages[-1].height
        if pixels > MAX_TOTAL_PIXELS:
            raise UnreadableTiff(f"pages 1 to {len(pages)} hold over {MAX_TOTAL_PIXELS} pixels")
    if not pages:
        raise UnreadableTiff("no pages")
    _refuse_shared_data(pages)
    return tuple(pages)


def _refuse_shared_data(pages: list[TiffPage]) -> None:
    """Refuse strips that overlap: no fax writer shares image data between pages (or strips),
    and a file that does makes a PDF many times its own size (one strip under 500 pages)."""
    strips = sorted(
        (offset, length, page.number) for page in pages for offset, length in page.strips
    )
    for (offset, length, number), (next_offset, _, next_number) in itertools.pairwise(strips):
        if offset + length > next_offset:
            raise UnreadableTiff(
                f"pages {number} and {next_number} share image data (at offset {next_offset})"
                if number != next_number
                else f"strips overlap (at offset {next_offset})",
                None if number != next_number else number,
            )


class _Reader:
    """Bounds-checked access to TIFF structures; every overrun becomes UnreadableTiff."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        if len(data) < 8:
            raise UnreadableTiff(f"{len(data)} bytes is too short for a TIFF header")
        if data[:2] == b"II":
            self.order = "<"
        elif data[:2] == b"MM":
            self.order = ">"
        else:
            raise UnreadableTiff("not a TIFF (no II/MM byte-order mark)")
        (magic,) = struct.unpack_from(self.order + "H", data, 2)
        if magic == 43:
            raise UnreadableTiff("BigTIFF is not a fax format")
        if magic != 42:
            raise UnreadableTiff(f"not a TIFF (magic number {magic})")

    def first_ifd(self) -> int:
        (offset,) = struct.unpack_from(self.order + "I", self.data, 4)
        if offset == 0:
            raise UnreadableTiff("no pages")
        return int(offset)

    def ifd(self, offset: int, number: int) -> tuple[dict[int, tuple[int, ...]], int]:
        """Read one directory: the wanted tags' values and the offset of the next directory."""
        self._need(offset, 2, number, "page directory")
        (count,) = struct.unpack_from(self.order + "H", self.data, offset)
        self._need(offset + 2, count * 12 + 4, number, "page directory")
        tags: dict[int, tuple[int, ...]] = {}
        first = offset + 2
        entries = struct.iter_unpack(self.order + "HHI4x", self.data[first : first + count * 12])
        for i, (tag, kind, n) in enumerate(entries):
            if tag in _WANTED:
                tags[tag] = self._values(tag, kind, n, first + i * 12 + 8, number)
        (next_offset,) = struct.unpack_from(self.order + "I", self.data, offset + 2 + count * 12)
        return tags, int(next_offset)

    def _values(self, tag: int, kind: int, n: int, field: int, number: int) -> tuple[int, ...]:
        if kind not in _TYPES:
            raise UnreadableTiff(f"tag {tag} has unsupported field type {kind}", number)
        if n == 0 or n > MAX_STRIPS:
            raise UnreadableTiff(f"tag {tag} has {n} values", number)
        code, size = _TYPES[kind]
        if n * size <= 4:
            where = field  # small values sit in the entry itself
        else:
            (where,) = struct.unpack_from(self.order + "I", self.data, field)
            self._need(where, n * size, number, f"values of tag {tag}")
        count = n * 2 if kind == 5 else n
        return struct.unpack_from(f"{self.order}{count}{code}", self.data, where)

    def _need(self, offset: int, length: int, number: int, what: str) -> None:
        if offset < 0 or offset + length > len(self.data):
            raise UnreadableTiff(f"{what} runs past the end of the file (truncated?)", number)


def _single(tags: dict[int, tuple[int, ...]], tag: Tag, default: int) -> int:
    values = tags.get(tag)
    return default if values is None else values[0]


def _page(tags: dict[int, tuple[int, ...]], number: int, file_size: int) -> TiffPage:
    """Check one directory's tags and turn them into a TiffPage."""
    if Tag.TILE_WIDTH in tags:
        raise UnreadableTiff("tiled image, not a fax page", number)
    if Tag.IMAGE_WIDTH not in tags or Tag.IMAGE_LENGTH not in tags:
        raise UnreadableTiff("width or length missing", number)
    width, height = tags[Tag.IMAGE_WIDTH][0], tags[Tag.IMAGE_LENGTH][0]
    if not 0 < width <= MAX_WIDTH:
        raise UnreadableTiff(f"width {width} px is outside 1..{MAX_WIDTH}", number)
    if not 0 < height <= MAX_LINES:
        raise UnreadableTiff(f"length {height} lines is outside 1..{MAX_LINES}", number)
    if width * height > MAX_PAGE_PIXELS:
        raise UnreadableTiff(f"{width} x {height} pixels is over {MAX_PAGE_PIXELS}", number)
    bits = tags.get(Tag.BITS_PER_SAMPLE, (1,))
    samples = _single(tags, Tag.SAMPLES_PER_PIXEL, 1)
    if any(b != 1 for b in bits) or samples != 1:
        raise UnreadableTiff(f"not bi-level ({samples} x {bits[0]} bits per pixel)", number)
    compression = _enum(Compression, _single(tags, Tag.COMPRESSION, 1), "compression", number)
    # TIFF-F makes WhiteIsZero the fax norm, so an absent tag means that.
    photometric = _enum(Photometric, _single(tags, Tag.PHOTOMETRIC, 0), "photometric", number)
    fill_order = _single(tags, Tag.FILL_ORDER, 1)
    if fill_order not in (1, 2):
        raise UnreadableTiff(f"fill order {fill_order}", number)
    rows_per_strip = min(_single(tags, Tag.ROWS_PER_STRIP, height), height) or height
    offsets = tags.get(Tag.STRIP_OFFSETS, ())
    counts = tags.get(Tag.STRIP_BYTE_COUNTS, ())
    expected = -(-height // rows_per_strip)
    if not offsets or len(offsets) != len(counts) or len(offsets) != expected:
        raise UnreadableTiff(
            f"{len(offsets)} strip offsets and {len(counts)} byte counts for {expected} strips",
            number,
        )
    for offset, length in zip(offsets, counts, strict=True):
        if length == 0:
            raise UnreadableTiff("a strip of image data is empty", number)
        if offset + length > file_size:
            raise UnreadableTiff("image data runs past the end of the file (truncated?)", number)
    unit = _single(tags, Tag.RESOLUTION_UNIT, 2)
    return TiffPage(
        number=number,
        width=width,
        height=height,
        compression=compression,
        photometric=photometric,
        fill_order=fill_order,
        t4_options=_single(tags, Tag.T4_OPTIONS, 0),
        t6_options=_single(tags, Tag.T6_OPTIONS, 0),
        rows_per_strip=rows_per_strip,
        strips=tuple(zip(offsets, counts, strict=True)),
        x_dpi=_dpi(tags.get(Tag.X_RESOLUTION), unit),
        y_dpi=_dpi(tags.get(Tag.Y_RESOLUTION), unit),
        clean=_single(tags, Tag.CLEAN_FAX_DATA, _UNCLEAN) in (_CLEAN, _REGENERATED),
    )


def _enum(kind: type[_E], value: int, what: str, number: int) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise UnreadableTiff(f"unsupported {what} {value}", number) from None


def _dpi(values: tuple[int, ...] | None, unit: int) -> float | None:
    """Dots per inch from a resolution tag, or None if absent, zero or unit-less.

    The tag should be a RATIONAL; a bare SHORT or LONG (sloppy writers) is taken at face value.
    """
    if values is None or unit == _RESOLUTION_UNIT_NONE:
        return None  # unit-less is only an aspect ratio: no physical size to honour
    numerator, denominator = (values[0], 1) if len(values) == 1 else values[:2]
    if numerator == 0 or denominator == 0:
        return None
    per_unit = numerator / denominator
    return per_unit * 2.54 if unit == _RESOLUTION_UNIT_CM else per_unit
