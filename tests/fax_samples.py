"""Make realistic fax TIFFs for the tests and the benchmark.

Pages are drawn with Pillow (letterhead, text, a table, a signature) at the fax's own resolution
and coded with libtiff. The file around them is assembled by `fax.tiffbuild`, because real fax
software writes what Pillow cannot: WhiteIsZero photometric, LSB-first fill order (spandsp),
big-endian files, cm resolution units, missing resolution tags.
"""

from __future__ import annotations

import io
import random
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageChops, ImageDraw, ImageFont

from backline.fax.tiff import Compression, Photometric, Tag, read_pages
from backline.fax.tiffbuild import PageSpec, build_tiff

FAX_X_DPI = 204.0
STANDARD, FINE, SUPERFINE = 98.0, 196.0, 391.0
LETTER_IN, A4_IN, LEGAL_IN = 11.0, 297 / 25.4, 14.0

Coding = Literal[
    "group4", "group3", "group3_2d", "group3_2d_unaligned", "modified_huffman", "packbits", "none"
]
_PILLOW_CODING: dict[Coding, tuple[str, Compression, int]] = {
    # name: (Pillow compression, TIFF compression tag, T4Options). spandsp writes Group 3 with
    # fill bits (EOLs end on a byte boundary, option 4), 1D or 2D (option 1).
    "group4": ("group4", Compression.GROUP4, 0),
    "group3": ("group3", Compression.GROUP3, 4),
    "group3_2d": ("group3", Compression.GROUP3, 1 | 4),
    "group3_2d_unaligned": ("group3", Compression.GROUP3, 1),
    "modified_huffman": ("tiff_ccitt", Compression.CCITT_RLE, 0),
    "packbits": ("packbits", Compression.PACKBITS, 0),
    "none": ("raw", Compression.NONE, 0),
}
_WORDS = (
    "patient", "referral", "cardiology", "results", "attached", "please", "call", "the",
    "practice", "regarding", "appointment", "insurance", "date", "of", "birth", "medication",
    "dosage", "twice", "daily", "follow-up", "clinic", "laboratory", "report", "normal",
    "range", "blood", "pressure", "signature", "physician", "urgent", "fax",
)  # fmt: skip


@dataclass(frozen=True)
class SamplePage:
    """A fax page to draw: `lines` rows at `y_dpi`, `width` columns at `x_dpi`."""

    lines: int = round(LETTER_IN * FINE)
    y_dpi: float = FINE
    width: int = 1728
    x_dpi: float = FAX_X_DPI
    seed: int = 0


def letter(y_dpi: float, seed: int = 0) -> SamplePage:
    return SamplePage(lines=round(LETTER_IN * y_dpi), y_dpi=y_dpi, seed=seed)


def sized(inches: float, y_dpi: float, seed: int = 0) -> SamplePage:
    return SamplePage(lines=round(inches * y_dpi), y_dpi=y_dpi, seed=seed)


@lru_cache(maxsize=64)
def page_image(page: SamplePage) -> Image.Image:
    """The page as it should look: mode "1", 0 is black. Cached: tests compare against it.

    Drawn on square pixels and then resampled to the fax's rows, as a fax scanner samples
    a standard page at half the vertical resolution.
    """
    square_lines = round(page.lines * page.x_dpi / page.y_dpi)
    image = Image.new("L", (page.width, square_lines), 255)
    draw = ImageDraw.Draw(image)
    rng = random.Random(page.seed)
    inch = page.x_dpi
    big = ImageFont.load_default(size=round(inch * 0.3))
    # Solid block top left: shows up if a renderer flips or rotates the page.
    draw.rectangle((inch * 0.5, inch * 0.4, inch * 1.5, inch * 1.0), fill=0)
    draw.text((inch * 1.8, inch * 0.45), f"Sample Clinic {page.seed}", font=big, fill=0)
    draw.line((inch * 0.5, inch * 1.2, page.width - inch * 0.5, inch * 1.2), fill=0, width=4)
    y = inch * 1.5
    glyphs = _word_masks(round(inch * 0.14))
    space = round(inch * 0.05)
    while y < square_lines - inch * 2.5:
        x = round(inch * 0.7)
        for _ in range(rng.randint(6, 13)):
            mask = glyphs[rng.choice(_WORDS)]
            image.paste(0, (x, round(y)), mask)
            x += mask.width + space
        y += inch * 0.22
        if rng.random() < 0.05:  # a small table now and then
            for row in range(4):
                for col in range(4):
                    left, top = inch * (0.7 + col * 1.7), y + row * inch * 0.25
                    box = (left, top, left + inch * 1.7, top + inch * 0.25)
                    draw.rectangle(box, outline=0, width=3)
            y += inch * 1.2
    base = square_lines - inch * 1.5
    points = [(inch * (1 + i * 0.08), base + rng.uniform(-0.25, 0.25) * inch) for i in range(30)]
    draw.line(points, fill=0, width=3)  # the signature
    rows = image.resize((page.width, page.lines), Image.Resampling.BOX)
    return rows.point(lambda v: 255 if v >= 128 else 0, mode="1")


@lru_cache(maxsize=4)
def _word_masks(size: int) -> dict[str, Image.Image]:
    """Each word rendered once as a paste mask: drawing text dominated the tests' run time."""
    font = ImageFont.load_default(size=size)
    masks = {}
    for word in _WORDS:
        *_, right, bottom = font.getbbox(word)
        mask = Image.new("L", (int(right), int(bottom)), 0)
        ImageDraw.Draw(mask).text((0, 0), word, font=font, fill=255)
        masks[word] = mask
    return masks


def fax_tiff(
    pages: tuple[SamplePage, ...],
    *,
    coding: Coding = "group4",
    photometric: Photometric = Photometric.WHITE_IS_ZERO,
    fill_order: int = 1,
    resolution_unit: Literal["inch", "cm", "missing"] = "inch",
    big_endian: bool = False,
    rows_per_strip: int | None = None,
    clean: bool = True,
) -> bytes:
    """A multi-page fax TIFF of `pages`, coded and laid out as asked.

    `clean` writes CleanFaxData = clean on Group 3 pages, as spandsp does; without it the file
    looks like Group 3 data stored as received, which may have damaged lines.
    """
    specs = [
        _page_spec(page, coding, photometric, fill_order, resolution_unit, rows_per_strip, clean)
        for page in pages
    ]
    return build_tiff(specs, big_endian=big_endian)


@lru_cache(maxsize=128)
def _page_spec(
    page: SamplePage,
    coding: Coding,
    photometric: Photometric,
    fill_order: int,
    resolution_unit: str,
    rows_per_strip: int | None,
    clean: bool,
) -> PageSpec:
    pillow_name, compression, t4_options = _PILLOW_CODING[coding]
    image = page_image(page)
    # Pillow codes bit 1 as black and writes BlackIsZero. For a WhiteIsZero page, code the
    # negative: its bits are then exactly those of a WhiteIsZero page of the real image.
    coded_image = ImageChops.invert(image) if photometric is Photometric.WHITE_IS_ZERO else image
    rows = rows_per_strip or page.lines
    out = io.BytesIO()
    info = {Tag.ROWS_PER_STRIP: rows} | ({Tag.T4_OPTIONS: t4_options} if t4_options else {})
    coded_image.save(out, "TIFF", compression=pillow_name, tiffinfo=info)
    (written,) = read_pages(out.getvalue())
    strips = written.strip_data(out.getvalue())
    if fill_order == 2:
        table = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
        strips = [strip.translate(table) for strip in strips]
    tags: dict[int, int | float] = {
        Tag.NEW_SUBFILE_TYPE: 2,  # a page of a multi-page document (TIFF-F)
        Tag.IMAGE_WIDTH: page.width,
        Tag.IMAGE_LENGTH: page.lines,
        Tag.BITS_PER_SAMPLE: 1,
        Tag.COMPRESSION: compression,
        Tag.PHOTOMETRIC: photometric,
        Tag.FILL_ORDER: fill_order,
        Tag.SAMPLES_PER_PIXEL: 1,
        Tag.ROWS_PER_STRIP: rows,
    }
    if compression is Compression.GROUP3:
        tags[Tag.T4_OPTIONS] = t4_options
        if clean:
            tags[Tag.CLEAN_FAX_DATA] = 0
    if resolution_unit != "missing":
        per_unit = 1.0 if resolution_unit == "inch" else 1 / 2.54
        tags[Tag.X_RESOLUTION] = page.x_dpi * per_unit
        tags[Tag.Y_RESOLUTION] = page.y_dpi * per_unit
        tags[Tag.RESOLUTION_UNIT] = 2 if resolution_unit == "inch" else 3
    return PageSpec(tags, tuple(strips))


# -- bombs: files a fax machine never sends, built to exhaust memory or to look converted ------


def coded_strip(image: Image.Image, compression: str) -> bytes:
    """`image` coded by libtiff (through Pillow) as one strip, MSB first."""
    out = io.BytesIO()
    image.save(out, "TIFF", compression=compression, tiffinfo={Tag.ROWS_PER_STRIP: image.height})
    (written,) = read_pages(out.getvalue())
    (strip,) = written.strip_data(out.getvalue())
    return strip


@lru_cache(maxsize=2)
def noise_strip(lines: int = 4000, seed: int = 0) -> bytes:
    """A valid Group 4 strip of random pixels, 1728 wide: about 1.8 MB for 4000 lines."""
    pixels = random.Random(seed).randbytes(1728 * lines // 8)
    return coded_strip(Image.frombytes("1", (1728, lines), pixels), "group4")


def shared_strip_tiff(strip: bytes, pages: int, lines: int, compression: int = 4) -> bytes:
    """`pages` page directories that all point at the one `strip`: 1728 x `lines` each."""
    head = b"II\x2a\x00" + struct.pack("<I", 8 + len(strip) + len(strip) % 2)
    out = bytearray(head + strip + b"\0" * (len(strip) % 2))
    tags = [
        (Tag.IMAGE_WIDTH, 1728), (Tag.IMAGE_LENGTH, lines), (Tag.COMPRESSION, compression),
        (Tag.STRIP_OFFSETS, 8), (Tag.ROWS_PER_STRIP, lines), (Tag.STRIP_BYTE_COUNTS, len(strip)),
    ]  # fmt: skip
    for number in range(pages):
        out += struct.pack("<H", len(tags))
        for tag, value in tags:
            out += struct.pack("<HHII", tag, 4, 1, value)
        following = len(out) + 4 if number + 1 < pages else 0
        out += struct.pack("<I", following)
    return bytes(out)


def tall_blank_pages(pages: int, lines: int = 16384) -> bytes:
    """`pages` blank Group 4 pages of 1728 x `lines`, each with its own (small) strip."""
    strip = coded_strip(Image.new("1", (1728, lines), 0), "group4")
    tags: dict[int, int | float] = {
        Tag.IMAGE_WIDTH: 1728,
        Tag.IMAGE_LENGTH: lines,
        Tag.COMPRESSION: 4,
    }
    return build_tiff([PageSpec(tags, [strip])] * pages)


def checkerboard_pages(pages: int, lines: int = 16384) -> bytes:
    """PackBits pages of alternating pixels: 64 KB each, over 10 MB each once in Group 4."""
    rows = (b"\x55" * 216 + b"\xaa" * 216) * (lines // 2)
    strip = coded_strip(Image.frombytes("1", (1728, lines), rows), "packbits")
    tags: dict[int, int | float] = {
        Tag.IMAGE_WIDTH: 1728,
        Tag.IMAGE_LENGTH: lines,
        Tag.COMPRESSION: 32773,
    }
    return build_tiff([PageSpec(tags, [strip])] * pages)


def random_data_as_group4(seed: int = 0) -> bytes:
    """A well-formed fine Letter fax whose Group 4 strip is replaced by random bytes."""
    return random_data_as("group4", seed=seed)


def random_data_as(coding: Coding, *, clean: bool = True, seed: int = 0) -> bytes:
    """A well-formed fine Letter fax coded as `coding`, its one strip replaced by random bytes."""
    tiff = bytearray(fax_tiff((letter(FINE),), coding=coding, clean=clean))
    offset, length = read_pages(bytes(tiff))[0].strips[0]
    tiff[offset : offset + length] = random.Random(seed).randbytes(length)
    return bytes(tiff)
