"""Fax TIFF to PDF: page sizes, what a viewer shows, size, header safety, and bad input.

The PDFs are checked by real readers: pdfium (pypdfium2) renders and extracts text, poppler's
pdftoppm renders too when installed, and pypdf walks the object graph. A page that came out
inverted, black, flipped or squashed fails against the pixels the TIFF was made from.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import struct
import subprocess
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pypdfium2 as pdfium  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageOps, ImageStat
from pypdf import PdfReader
from pypdf.generic import ArrayObject, ContentStream, DictionaryObject, IndirectObject

from backline.fax.errors import PdfMismatch, UnreadableTiff
from backline.fax.geometry import PageGeometry
from backline.fax.header import FaxHeader, clean_text
from backline.fax.pdf import HEADER_BAND_PT, FaxPdf, tiff_to_pdf
from backline.fax.pdfwrite import pdf_string
from backline.fax.tiff import MAX_PAGES, MAX_TOTAL_PIXELS, Photometric, Tag, TiffPage, read_pages
from backline.fax.tiffbuild import PageSpec, build_tiff
from backline.fax.verify import verify_pdf
from tests.fax_samples import (
    A4_IN,
    FINE,
    LEGAL_IN,
    STANDARD,
    SUPERFINE,
    Coding,
    SamplePage,
    checkerboard_pages,
    fax_tiff,
    letter,
    noise_strip,
    page_image,
    random_data_as,
    random_data_as_group4,
    shared_strip_tiff,
    sized,
    tall_blank_pages,
)

HEADER = FaxHeader(
    received_at=datetime(2025, 3, 4, 14, 5, tzinfo=timezone(timedelta(hours=1))),
    sender="+49 30 1234567 Dr. Weiss",
    destination="+49 30 7654321",
    station_id="+49 30 1234567",
)
LETTER_PT = (8.5 * 72, 11 * 72)


def convert(tiff: bytes, header: FaxHeader = HEADER) -> FaxPdf:
    """Convert and verify, as the caller does before letting go of the TIFF."""
    result = tiff_to_pdf(tiff, header)
    verify_pdf(result.pdf, result.pages)
    return result


def pdf_sizes(pdf: bytes) -> list[tuple[float, float]]:
    """Page sizes in points as pdfium sees them (independent of our own bookkeeping)."""
    document = pdfium.PdfDocument(pdf)
    return [tuple(document[i].get_size()) for i in range(len(document))]


def within(value: float, target: float, tolerance: float) -> bool:
    return abs(value - target) <= tolerance * target


# --- page geometry ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "clean"),
    [("group4", True), ("group3", True), ("group3_2d", True), ("group3_2d", False)],
)
def test_standard_and_fine_pages_are_each_letter_size(coding: Coding, clean: bool) -> None:
    pages = (letter(STANDARD), letter(FINE, 1), letter(STANDARD, 2))
    tiff = fax_tiff(pages, coding=coding, clean=clean)
    sizes = pdf_sizes(convert(tiff).pdf)
    assert len(sizes) == 3
    for width, height in sizes:
        assert within(width, LETTER_PT[0], 0.01) and within(height, LETTER_PT[1], 0.01)
    # The trap this guards: a 98 lpi page drawn at 196 lpi would be 5.5 in tall.
    assert sizes[0][1] == pytest.approx(sizes[1][1], rel=0.01)


@pytest.mark.parametrize(
    ("inches", "y_dpi"),
    [
        (A4_IN, STANDARD),
        (A4_IN, FINE),
        (LEGAL_IN, STANDARD),
        (LEGAL_IN, FINE),  # 2744 lines: longer than Letter, must not be cut to 11 in
        (LEGAL_IN, SUPERFINE),
        (30.0, STANDARD),  # a continuous long page
    ],
)
def test_long_pages_keep_their_full_length(inches: float, y_dpi: float) -> None:
    page = sized(inches, y_dpi)
    ((width, height),) = pdf_sizes(convert(fax_tiff((page,))).pdf)
    assert within(height, inches * 72, 0.005)
    assert within(width, 1728 / 204 * 72, 0.001)


def test_mixed_resolutions_each_page_sized_by_its_own() -> None:
    pages = (
        letter(FINE),
        sized(A4_IN, STANDARD, 1),
        sized(LEGAL_IN, SUPERFINE, 2),
        sized(LEGAL_IN, STANDARD, 3),
        SamplePage(lines=round(A4_IN * FINE), width=2048, seed=4),  # B4 width
    )
    result = convert(fax_tiff(pages))
    expected = [(8.47, 11.0), (8.47, A4_IN), (8.47, 14.0), (8.47, 14.0), (10.04, A4_IN)]
    for (width, height), (want_w, want_h) in zip(pdf_sizes(result.pdf), expected, strict=True):
        assert within(width, want_w * 72, 0.002) and within(height, want_h * 72, 0.002)
    assert result.notes == ()


@pytest.mark.parametrize(
    ("page", "assumed_lpi"),
    [
        (letter(STANDARD), STANDARD),
        (letter(FINE), FINE),
        (letter(SUPERFINE), SUPERFINE),
        (sized(LEGAL_IN, STANDARD), STANDARD),
        (sized(LEGAL_IN, FINE), FINE),
    ],
)
def test_missing_resolution_is_guessed_from_line_count(
    page: SamplePage, assumed_lpi: float
) -> None:
    result = convert(fax_tiff((page,), resolution_unit="missing"))
    (geometry,) = result.pages
    assert geometry.x_dpi == 204.0
    assert geometry.y_dpi == pytest.approx(assumed_lpi, rel=0.01)
    assert len(result.notes) == 2 and "assumed" in result.notes[1]


@pytest.mark.parametrize("variant", ["cm", "big_endian", "fill_order_2", "multi_strip"])
def test_file_layout_variants_read_the_same(variant: str) -> None:
    pages = (letter(STANDARD), letter(FINE, 1))
    tiff = fax_tiff(
        pages,
        resolution_unit="cm" if variant == "cm" else "inch",
        big_endian=variant == "big_endian",
        fill_order=2 if variant == "fill_order_2" else 1,
        rows_per_strip=300 if variant == "multi_strip" else None,
    )
    sizes = pdf_sizes(convert(tiff).pdf)
    assert all(within(h, LETTER_PT[1], 0.01) for _, h in sizes)


# --- what a viewer shows --------------------------------------------------------------------


def render_pdfium(pdf: bytes, _tmp: Path) -> list[Image.Image]:
    document = pdfium.PdfDocument(pdf)
    return [document[i].render(scale=1.0).to_pil().convert("L") for i in range(len(document))]


def render_poppler(pdf: bytes, tmp: Path) -> list[Image.Image]:
    """The first page only: poppler is here to cross-check the CCITT parameters, not the pages."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils not installed")
    source = tmp / "fax.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "72", "-gray", "-png", "-l", "1", "-singlefile", source, tmp / "page"],
        check=True,
        timeout=30,
    )
    with Image.open(tmp / "page.png") as image:
        return [image.convert("L")]


Renderer = Callable[[bytes, Path], list[Image.Image]]


def image_difference(rendered: Image.Image, geometry: PageGeometry, page: SamplePage) -> float:
    """Mean difference (0..255) between the fax image area of a 72 dpi render and the TIFF page.

    Both are averaged over blocks about 1/10 in square, so resampling does not count but an
    inverted, blank, black, flipped or squashed page does.
    """
    width, height = geometry.width_pt, geometry.height_pt
    scale = (height - HEADER_BAND_PT) / height
    left = (width - width * scale) / 2
    box = (round(left), round(height - height * scale), round(left + width * scale), round(height))
    grid = (round(width / 7.2), round(height / 7.2))
    shown = rendered.crop(box).resize(grid, Image.Resampling.BOX)
    truth = page_image(page).convert("L").resize(grid, Image.Resampling.BOX)
    return float(ImageStat.Stat(ImageChops.difference(shown, truth)).mean[0])


# (coding, photometric, fill order, CleanFaxData present, expect transcoding)
RENDER_CASES: list[tuple[Coding, Photometric, int, bool, bool]] = [
    ("group4", Photometric.WHITE_IS_ZERO, 1, True, False),
    ("group4", Photometric.WHITE_IS_ZERO, 2, True, False),  # bits reversed
    ("group4", Photometric.BLACK_IS_ZERO, 1, True, False),  # /BlackIs1 true
    ("group3", Photometric.WHITE_IS_ZERO, 2, True, False),  # spandsp 1D: /K 0
    ("group3_2d", Photometric.WHITE_IS_ZERO, 2, True, False),  # spandsp 2D: /K 1
    ("group3_2d_unaligned", Photometric.BLACK_IS_ZERO, 1, True, False),
    ("group3_2d", Photometric.WHITE_IS_ZERO, 1, False, True),  # maybe damaged: via libtiff
    ("group3", Photometric.BLACK_IS_ZERO, 2, False, True),
    ("modified_huffman", Photometric.WHITE_IS_ZERO, 2, True, True),  # no EOLs: via libtiff
    ("packbits", Photometric.BLACK_IS_ZERO, 1, True, True),
    ("none", Photometric.WHITE_IS_ZERO, 1, True, True),
]


@pytest.mark.parametrize(
    ("renderer", "coding", "photometric", "fill_order", "clean", "transcoded"),
    [
        pytest.param(renderer, *case, id=f"{name}-{case[0]}-{case[1].name}-{case[2]}-{case[3]}")
        for case in RENDER_CASES
        for name, renderer in (("pdfium", render_pdfium), ("poppler", render_poppler))
        # Poppler for each distinct set of CCITT parameters; transcoded pages are plain Group 4
        # like the first case, and fill order 2 only changes bytes before they reach the PDF.
        if name == "pdfium" or not (case[4] or (case[2] == 2 and case[0] == "group4"))
    ],
)
def test_rendered_pages_look_like_the_tiff(
    renderer: Renderer,
    coding: Coding,
    photometric: Photometric,
    fill_order: int,
    clean: bool,
    transcoded: bool,
    tmp_path: Path,
) -> None:
    pages = (letter(STANDARD), letter(FINE, 1))
    tiff = fax_tiff(
        pages, coding=coding, photometric=photometric, fill_order=fill_order, clean=clean
    )
    result = convert(tiff)
    assert result.transcoded == (len(pages) if transcoded else 0)
    renders = renderer(result.pdf, tmp_path)
    for page, geometry, rendered in zip(pages, result.pages, renders, strict=False):
        assert image_difference(rendered, geometry, page) < 6
        # The comparison must be able to fail: the same render against wrong truths.
        inverted = ImageOps.invert(rendered)
        flipped = ImageOps.flip(rendered)
        assert image_difference(inverted, geometry, page) > 100
        assert image_difference(flipped, geometry, page) > 12
        assert image_difference(ImageOps.mirror(rendered), geometry, page) > 10


# --- size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "pages"),
    [
        ("group4", (letter(FINE), letter(FINE, 1), letter(FINE, 2))),
        ("group4", (letter(STANDARD), letter(STANDARD, 1))),  # small pages: overhead shows most
        ("group3_2d", (letter(FINE), letter(STANDARD, 1))),
        ("group3", (letter(FINE),)),
    ],
)
def test_pdf_is_close_to_the_tiff_in_size(coding: Coding, pages: tuple[SamplePage, ...]) -> None:
    tiff = fax_tiff(pages, coding=coding)
    assert len(convert(tiff).pdf) <= 1.5 * len(tiff)


def test_same_input_gives_the_same_pdf() -> None:
    tiff = fax_tiff((letter(FINE),))
    assert tiff_to_pdf(tiff, HEADER).pdf == tiff_to_pdf(tiff, HEADER).pdf


# --- header ---------------------------------------------------------------------------------


def page_texts(pdf: bytes) -> list[str]:
    document = pdfium.PdfDocument(pdf)
    return [str(document[i].get_textpage().get_text_range()) for i in range(len(document))]


def test_header_shows_time_sender_destination_and_page_count() -> None:
    texts = page_texts(convert(fax_tiff((letter(STANDARD), letter(FINE, 1)))).pdf)
    for number, text in enumerate(texts, start=1):
        assert "2025-03-04 14:05+01:00" in text
        assert "+49 30 1234567 Dr. Weiss" in text
        assert "To +49 30 7654321" in text
        assert f"Page {number} of 2" in text


HOSTILE_STATION = ") Tj /JavaScript (\\"  # fits the 20 characters a station ID may show
HOSTILE_SENDER = "(x) Tj ET /S /JavaScript /JS (app.alert(1))"


def all_keys(reader: PdfReader) -> set[str]:
    """Every dictionary key reachable from the trailer."""
    keys: set[str] = set()
    seen: set[int] = set()
    todo: list[object] = [reader.trailer]
    while todo:
        item = todo.pop()
        if isinstance(item, IndirectObject):
            if item.idnum in seen:
                continue
            seen.add(item.idnum)
            item = item.get_object()
        if isinstance(item, DictionaryObject):
            keys.update(str(k) for k in item)
            todo.extend(item.values())
        elif isinstance(item, ArrayObject):
            todo.extend(item)
    return keys


def content_operations(pdf: bytes) -> list[tuple[list[object], bytes]]:
    reader = PdfReader(io.BytesIO(pdf), strict=True)
    operations: list[tuple[list[object], bytes]] = ContentStream(
        reader.pages[0].get_contents(), reader
    ).operations
    return operations


def test_hostile_station_id_is_only_text() -> None:
    tiff = fax_tiff((letter(STANDARD),))
    header = FaxHeader(
        HEADER.received_at, HOSTILE_SENDER, "Evil\r\nBT /F1 99 Tf ET\x00", HOSTILE_STATION
    )
    result = convert(tiff, header)
    reader = PdfReader(io.BytesIO(result.pdf), strict=True)
    assert not all_keys(reader) & {"/JavaScript", "/JS", "/OpenAction", "/AA", "/Names", "/S"}
    # The page does exactly what a page with a harmless header does, operator for operator;
    # the hostile text is one operand of one text-showing operator.
    hostile_ops = content_operations(result.pdf)
    plain_ops = content_operations(tiff_to_pdf(tiff, HEADER).pdf)
    assert [op for _, op in hostile_ops] == [op for _, op in plain_ops]
    shown = [str(operands[0]) for operands, operator in hostile_ops if operator == b"Tj"]
    assert any(HOSTILE_STATION in text and "ET /S /JavaScript" in text for text in shown)
    (text,) = page_texts(result.pdf)
    assert HOSTILE_STATION in text and "Evil BT /F1 99 Tf ET" in text


@pytest.mark.parametrize(
    ("raw", "limit", "shown"),
    [
        ("+49 30 1234", 20, "+49 30 1234"),
        ("line\r\nbreak\tand\x00nul", 40, "line break and nul"),
        ("\u202eevil\u200b", 20, "evil"),  # bidi override and zero-width space are format chars
        ("Dr. Müller Straße €", 40, "Dr. Müller Straße €"),  # in WinAnsi: kept
        ("東京 клиника", 20, "?? ???????"),  # not in the font: visible placeholder
        ("x" * 50, 20, "x" * 17 + "..."),
        ("\x07\x08  ", 20, "unknown"),
        ("ﬁne", 20, "fine"),  # NFKC: ligature to letters
    ],
)
def test_clean_text(raw: str, limit: int, shown: str) -> None:
    assert clean_text(raw, limit) == shown


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("Page 1 of 2", b"(Page 1 of 2)"),
        (") Tj (", b"(\\) Tj \\()"),
        ("back\\slash", b"(back\\\\slash)"),
        ("line\nbreak\r", b"(line\\012break\\015)"),
        ("Müller €", b"(M\\374ller \\200)"),
        ("東", b"(?)"),
    ],
)
def test_pdf_string_is_printable_ascii_and_closed(text: str, written: bytes) -> None:
    assert pdf_string(text) == written


def test_header_needs_a_time_zone() -> None:
    with pytest.raises(ValueError, match="time-zone"):
        FaxHeader(datetime(2025, 3, 4, 14, 5), "a", "b", "c")


# --- bad input ------------------------------------------------------------------------------


def set_tag(tiff: bytes, tag: int, value: int) -> bytes:
    """Overwrite an inline value of `tag` in the first directory of a little-endian TIFF."""
    out = bytearray(tiff)
    (ifd,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        found, kind, _ = struct.unpack_from("<HHI", out, entry)
        if found == tag:
            struct.pack_into("<HHII", out, entry, tag, kind, 1, value)
            return bytes(out)
    raise AssertionError(f"tag {tag} not in first directory")


def loop_back(tiff: bytes) -> bytes:
    """Point the first directory's next-directory link at itself."""
    out = bytearray(tiff)
    (ifd,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, ifd)
    struct.pack_into("<I", out, ifd + 2 + 12 * count, ifd)
    return bytes(out)


def many_pages(count: int) -> bytes:
    one_line = PageSpec({Tag.IMAGE_WIDTH: 1728, Tag.IMAGE_LENGTH: 1, Tag.COMPRESSION: 4}, [b"\0"])
    return build_tiff([one_line] * count)


def zeroed_strip(tiff: bytes) -> bytes:
    """Overwrite the first strip with zero bytes, as a sparse or damaged file would have."""
    page = read_pages(tiff)[0]
    offset, length = page.strips[0]
    return tiff[:offset] + bytes(length) + tiff[offset + length :]


def too_long_for_pdf() -> bytes:
    """16000 lines at 28 lpi: within the line bound and plausible for 864 px at 70 dpi."""
    tags: dict[int, int | float] = {
        Tag.IMAGE_WIDTH: 864,
        Tag.IMAGE_LENGTH: 16000,
        Tag.COMPRESSION: 4,
        Tag.X_RESOLUTION: 70.0,
        Tag.Y_RESOLUTION: 28.0,
    }
    return build_tiff([PageSpec(tags, [b"\0"])])


G4_LETTER = fax_tiff((letter(STANDARD), letter(FINE, 1)))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: b"", "too short"),
        (lambda: b"%PDF-1.4 not a tiff at all", "not a TIFF"),
        (lambda: b"II\x2b\x00\x08\x00\x00\x00" + bytes(16), "BigTIFF"),
        (lambda: G4_LETTER[: len(G4_LETTER) // 2], "truncated"),
        (lambda: G4_LETTER[:-30], "truncated"),
        (lambda: set_tag(G4_LETTER, Tag.STRIP_BYTE_COUNTS, 10**8), "truncated"),
        (lambda: loop_back(G4_LETTER), "loops"),
        (lambda: many_pages(MAX_PAGES + 1), f"more than {MAX_PAGES}"),
        (lambda: set_tag(G4_LETTER, Tag.IMAGE_WIDTH, 2**31), "width"),
        (lambda: set_tag(G4_LETTER, Tag.IMAGE_LENGTH, 10**7), "length"),
        (
            lambda: set_tag(set_tag(G4_LETTER, Tag.IMAGE_WIDTH, 4864), Tag.IMAGE_LENGTH, 16384),
            "pixels is over",
        ),
        (lambda: set_tag(G4_LETTER, Tag.STRIP_BYTE_COUNTS, 0), "empty"),
        (lambda: set_tag(G4_LETTER, Tag.IMAGE_WIDTH, 1700), "not a fax scan-line width"),
        (lambda: set_tag(G4_LETTER, Tag.BITS_PER_SAMPLE, 8), "not bi-level"),
        (lambda: set_tag(G4_LETTER, Tag.COMPRESSION, 7), "unsupported compression 7"),
        (lambda: set_tag(G4_LETTER, Tag.PHOTOMETRIC, 2), "unsupported photometric 2"),
        (lambda: set_tag(G4_LETTER, Tag.ROWS_PER_STRIP, 100), "strip"),
        (lambda: zeroed_strip(fax_tiff((letter(FINE),), rows_per_strip=500)), "cannot be decoded"),
        (lambda: too_long_for_pdf(), "PDF limit"),
    ],
    ids=[
        "empty", "garbage", "bigtiff", "half", "tail-cut", "strip-past-end", "loop",
        "page-bomb", "width-bomb", "length-bomb", "pixel-bomb", "empty-strip", "wrong-width",
        "greyscale", "jpeg", "rgb", "strip-count", "zeroed-data", "too-long-for-pdf",
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_a_reason(make: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(UnreadableTiff) as caught:
        tiff_to_pdf(make(), HEADER)
    assert reason in caught.value.reason


def test_pillow_bomb_guard_becomes_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Our own bounds stop bombs first; if Pillow's guard fires anyway it must not escape.
    # (A CCITT page is coded again from its check's own decoding, fax.group4; a PackBits
    # page still goes through Pillow.)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UnreadableTiff, match="cannot be decoded") as caught:
        tiff_to_pdf(fax_tiff((letter(STANDARD),), coding="packbits"), HEADER)
    assert caught.value.page == 1


def test_damaged_group3_lines_still_convert_under_error_warnings() -> None:
    # Noise on the line garbles Group 3 rows; libtiff skips them, and the page must survive
    # even when Python warnings are errors.
    tiff = bytearray(fax_tiff((letter(FINE),), coding="group3_2d", clean=False))
    offset, length = read_pages(bytes(tiff))[0].strips[0]
    for at in range(offset + length // 3, offset + length // 2, 97):
        tiff[at] ^= 0x5A
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = convert(bytes(tiff))
    assert len(result.pages) == 1


def test_reduced_resolution_preview_is_not_a_page() -> None:
    good = read_pages(G4_LETTER)[0]
    preview = PageSpec(
        {Tag.NEW_SUBFILE_TYPE: 1, Tag.IMAGE_WIDTH: 200, Tag.IMAGE_LENGTH: 100,
         Tag.COMPRESSION: 4},
        [b"\0"],
    )  # fmt: skip
    page = PageSpec(
        {Tag.IMAGE_WIDTH: 1728, Tag.IMAGE_LENGTH: good.height, Tag.COMPRESSION: 4,
         Tag.X_RESOLUTION: 204.0, Tag.Y_RESOLUTION: 98.0},
        good.strip_data(G4_LETTER),
    )  # fmt: skip
    assert len(convert(build_tiff([preview, page])).pages) == 1


# --- verification ---------------------------------------------------------------------------


def test_verify_accepts_what_was_written() -> None:
    result = tiff_to_pdf(G4_LETTER, HEADER)
    verify_pdf(result.pdf, result.pages)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda pdf, pages: (pdf[: len(pdf) - 200], pages), "unreadable PDF"),
        (lambda pdf, pages: (b"garbage", pages), "unreadable PDF"),
        (lambda pdf, pages: (pdf, pages[:1]), "2 pages, expected 1"),
        (
            lambda pdf, pages: (pdf, (pages[0], PageGeometry(1728, 2156, 204.0, 98.0))),
            "page 2 is",
        ),
        (
            lambda pdf, pages: (pdf, (pages[0], PageGeometry(864, 1078, 102.0, 98.0))),
            "page 2 image is",
        ),
    ],
    ids=["truncated", "garbage", "page-count", "page-size", "image-size"],
)
def test_verify_refuses_a_pdf_that_does_not_match(
    damage: Callable[[bytes, tuple[PageGeometry, ...]], tuple[bytes, tuple[PageGeometry, ...]]],
    reason: str,
) -> None:
    result = tiff_to_pdf(G4_LETTER, HEADER)
    pdf, pages = damage(result.pdf, result.pages)
    with pytest.raises(PdfMismatch) as caught:
        verify_pdf(pdf, pages)
    assert reason in caught.value.reason


# -- bombs (issue 18, item 7): refused with a reason before memory or time runs out -----------


def test_a_strip_shared_by_more_pages_than_a_fax_has_is_refused() -> None:
    # The attack as found: 500 directories over one 1.8 MB Group 4 strip (a 900 MB PDF before).
    tiff = shared_strip_tiff(noise_strip(), 500, 4000)
    with pytest.raises(UnreadableTiff, match=f"more than {MAX_PAGES} page directories"):
        tiff_to_pdf(tiff, HEADER)


def test_a_strip_shared_by_a_few_pages_is_refused() -> None:
    tiff = shared_strip_tiff(noise_strip(), 3, 4000)
    with pytest.raises(UnreadableTiff, match="pages 1 and 2 share image data"):
        tiff_to_pdf(tiff, HEADER)


def test_more_pixels_than_a_fax_has_are_refused_before_decoding() -> None:
    pages = MAX_TOTAL_PIXELS // (1728 * 16384) + 1
    tiff = tall_blank_pages(pages)
    assert len(tiff) < 2**20 and pages <= MAX_PAGES  # each page small, each its own data
    with pytest.raises(UnreadableTiff, match=f"pages 1 to {pages} hold over"):
        tiff_to_pdf(tiff, HEADER)
    assert len(read_pages(tall_blank_pages(pages - 1))) == pages - 1  # one page less is a fax


def test_pages_that_grow_when_transcoded_stop_at_the_pdf_bound() -> None:
    tiff = checkerboard_pages(3)  # 192 KB of PackBits, 30 MB of Group 4
    with pytest.raises(UnreadableTiff, match="the PDF would be over 16 MiB by page 2"):
        tiff_to_pdf(tiff, HEADER)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_data_declared_group4_is_not_converted(seed: int) -> None:
    with pytest.raises(UnreadableTiff, match="cannot be decoded") as caught:
        tiff_to_pdf(random_data_as_group4(seed), HEADER)
    assert caught.value.page == 1


@pytest.mark.parametrize(
    ("coding", "clean"),
    [("group3_2d", True), ("group3_2d", False), ("group3", False), ("modified_huffman", True)],
)
def test_random_data_declared_group3_is_not_converted(coding: Coding, clean: bool) -> None:
    # Transcoded pages may keep some damaged rows (a noisy line), not a majority of them.
    with pytest.raises(UnreadableTiff, match="rows damaged"):
        tiff_to_pdf(random_data_as(coding, clean=clean), HEADER)


def test_the_first_unreadable_page_is_the_one_named_though_pages_are_coded_two_at_a_time(
) -> None:
    # Pages 2 and 3 of 5 hold random bytes; page 3 is short, so its decoding, running beside
    # page 2's, fails first. The reason must still name page 2, as page by page it would.
    pages = (letter(FINE), letter(FINE, 1), sized(1.0, FINE), letter(FINE, 3), letter(FINE, 4))
    tiff = bytearray(fax_tiff(pages, coding="group3_2d", clean=False))
    for number in (2, 3):
        offset, length = read_pages(bytes(tiff))[number - 1].strips[0]
        tiff[offset : offset + length] = bytes((7 * i + number) % 251 for i in range(length))
    with pytest.raises(UnreadableTiff, match="rows damaged") as caught:
        tiff_to_pdf(bytes(tiff), HEADER)
    assert caught.value.page == 2
    # Without the damage, every page comes out, in order, each coded again.
    whole = convert(fax_tiff(pages, coding="group3_2d", clean=False))
    assert [round(g.height_pt) for g in whole.pages] == [792, 792, 72, 792, 792]
    assert whole.transcoded == len(pages)


def test_a_group4_page_that_ends_early_is_not_converted() -> None:
    # Valid codes, then the end-of-block mark after a third of the rows: the rest of the page
    # would be blank in the PDF.
    whole = fax_tiff((letter(FINE),))
    short = fax_tiff((sized(11.0 / 3, FINE),))
    (page,) = read_pages(whole)
    (short_page,) = read_pages(short)
    (data,) = short_page.strip_data(short)
    spec = PageSpec(
        {Tag.IMAGE_WIDTH: 1728, Tag.IMAGE_LENGTH: page.height, Tag.COMPRESSION: 4}, [data]
    )
    with pytest.raises(UnreadableTiff, match="cannot be decoded") as caught:
        tiff_to_pdf(build_tiff([spec]), HEADER)
    damaged = re.search(r"(\d+) of (\d+) rows damaged", caught.value.reason)
    assert damaged is not None and int(damaged[2]) == page.height
    assert int(damaged[1]) >= page.height - short_page.height  # every row the data lacks


# -- fuzz: the reader ends every mutated file in pages or its own error -----------------------


def _seed_files() -> list[bytes]:
    tiny = sized(0.5, STANDARD)
    return [
        fax_tiff((tiny, sized(0.5, FINE, 1))),
        fax_tiff((tiny,), coding="group3_2d", fill_order=2, big_endian=True),
        fax_tiff((tiny,), coding="modified_huffman", rows_per_strip=10, resolution_unit="cm"),
    ]


SEEDS = _seed_files()


@functools.cache
def _structure(tiff: bytes) -> list[int]:
    """The offsets of a file's header and directories: everything but its image data."""
    image_data = {at for page in read_pages(tiff) for o, n in page.strips for at in range(o, o + n)}
    return [at for at in range(len(tiff)) if at not in image_data]


@st.composite
def mutated_tiffs(draw: st.DrawFn) -> bytes:
    """A valid fax TIFF with bytes overwritten (mostly in its directories), cut or spliced."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    structure = _structure(bytes(data))
    position = st.one_of(st.integers(0, len(data) - 1), st.sampled_from(structure))
    value = st.one_of(st.integers(0, 255), st.sampled_from([0, 1, 2, 4, 0x7F, 0x80, 0xFF]))
    for at, byte in draw(st.lists(st.tuples(position, value), max_size=12)):
        data[at] = byte
    match draw(st.sampled_from(["none", "cut", "splice"])):
        case "cut":
            del data[draw(st.integers(0, len(data))) :]
        case "splice":
            start = draw(st.integers(0, len(data) - 1))
            piece = data[start : start + draw(st.integers(1, 64))]
            where = draw(st.integers(0, len(data)))
            data[where:where] = piece
        case _:
            pass
    return bytes(data)


def _pages_or_own_error(tiff: bytes) -> tuple[TiffPage, ...] | UnreadableTiff:
    try:
        return read_pages(tiff)
    except UnreadableTiff as exc:  # anything else escapes and fails the test
        return exc


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(mutated_tiffs())
def test_fuzzed_tiff_ends_in_pages_or_the_readers_error(tiff: bytes) -> None:
    result = _pages_or_own_error(tiff)
    if isinstance(result, tuple):
        for page in result:  # what it hands out is what it promised: inside the file
            assert all(
                offset >= 0 and offset + length <= len(tiff) for offset, length in page.strips
            )


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(mutated_tiffs())
def test_fuzzed_tiff_converts_or_is_refused_with_a_reason(tiff: bytes) -> None:
    try:
        result = tiff_to_pdf(tiff, HEADER)
    except UnreadableTiff as exc:
        assert exc.reason
    else:
        verify_pdf(result.pdf, result.pages)
