"""Get each page as one CCITT-coded stream, ready to embed in a PDF as /CCITTFaxDecode.

Most pages go in as they are, not coded again: fast, and the PDF is the TIFF's size. Every
CCITT page is still decoded once, in full, as the check that it can be (`fax.decodecheck`).
- Group 4 (T.6) in one strip: always.
- Group 3 (T.4, 1D or 2D) in one strip, when the writer marked it clean (CleanFaxData): spandsp,
  which Asterisk and FreeSWITCH use, decodes what it receives and writes it again with libtiff,
  regenerating damaged rows, and says so in that tag.
Anything else (Group 3 as received off a noisy line, several strips, Modified Huffman without
EOLs, uncompressed, PackBits) is transcoded to Group 4 by libtiff: a CCITT page from the bits
its check decoded (`fax.group4`), any other through Pillow. libtiff skips
damaged rows and carries on, where PDF viewers differ; a strip boundary restarts the coding,
which PDF's decoder cannot follow.

Colour trap: CCITT codes describe "white" and "black" runs, and the file's photometric tag says
which of them is visibly white. Both paths keep the coded colours as they were in the file, so one
rule maps to PDF for every page: in a BlackIsZero file coded black is visible white, which is
/BlackIs1 true. (Decoding with the real photometric and re-encoding would need two inversions.)
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from backline.fax.decodecheck import decode_page
from backline.fax.errors import UnreadableTiff
from backline.fax.group4 import encode_group4
from backline.fax.tiff import Compression, Photometric, Tag, TiffPage, read_pages
from backline.fax.tiffbuild import PageSpec, build_tiff

# Reverses the bits of every byte: turns FillOrder 2 (LSB first, as spandsp writes) into the
# MSB-first order PDF's CCITT decoder reads, in one C-speed bytes.translate.
_REVERSE_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
# T4Options/T6Options bit: uncompressed mode may appear; PDF viewers need not support it.
_T4_2D, _T4_UNCOMPRESSED = 1, 2
_T6_UNCOMPRESSED = 2
# PDF /K: negative is pure 2D (T.6), zero is 1D (T.4 MH), positive is mixed 1D/2D (T.4 MR).
K_GROUP4, K_GROUP3_1D, K_GROUP3_2D = -1, 0, 1
_CCITT = frozenset({Compression.CCITT_RLE, Compression.GROUP3, Compression.GROUP4})
# Two CCITT pages are decoded and coded at once (libtiff runs without the GIL: ctypes releases
# it), but only pages small enough that two of them hold less than one large page does alone,
# so what a hostile TIFF can make us hold stays what it was (tests/test_fax_intake.py, bombs).
# A job holds its page decoded (twice: libtiff's buffer and the bytes kept), its coded data
# (the one-page file and libtiff's map of it) and the Group 4 output (written, then sliced):
# at 1 MiB decoded (a superfine Letter page is 0.9 MiB) and 1 MiB coded, and the densest
# Group 4 we found (a checkerboard, 3 bits a pixel: 3 MiB), about 10 MiB; a page at the
# 32 Mpixel bound (4 MiB decoded, 12 MiB coded again) holds over 30 MiB, and runs alone.
# Pages that go through Pillow (`_transcode`: a byte a pixel) always run alone.
_AT_ONCE = 2
_OVERLAP_DECODED_BYTES = 2**20
_OVERLAP_CODED_BYTES = 2**20


@dataclass(frozen=True)
class CcittImage:
    """A page as one CCITT stream, MSB first, `height` rows of `width` pixels.

    `k` is PDF's /K. `black_is_1` is the PDF /BlackIs1 flag that shows it the right way round.
    """

    data: bytes
    width: int
    height: int
    k: int
    black_is_1: bool
    transcoded: bool


def ccitt_images(tiff: bytes, pages: Sequence[TiffPage]
                 ) -> Generator[CcittImage, None, None]:
    """`ccitt_image` of each page, in order, two small CCITT pages at a time (see _AT_ONCE).

    A page's UnreadableTiff comes out when its turn comes, after every page before it, as if
    the pages went one by one; a consumer that stops early (closes this iterator) waits for
    at most the one page coded ahead.
    """
    ahead: deque[Future[CcittImage]] = deque()
    with ThreadPoolExecutor(max_workers=_AT_ONCE, thread_name_prefix="fax-page") as pool:
        for page in pages:
            if not _overlaps(page):
                while ahead:
                    yield ahead.popleft().result()
                yield ccitt_image(tiff, page)
                continue
            if len(ahead) == _AT_ONCE:
                yield ahead.popleft().result()
            ahead.append(pool.submit(ccitt_image, tiff, page))
        while ahead:
            yield ahead.popleft().result()


def _overlaps(page: TiffPage) -> bool:
    """Whether the page may be decoded and coded while another page is."""
    return (
        page.compression in _CCITT
        and page.height * ((page.width + 7) // 8) <= _OVERLAP_DECODED_BYTES
        and sum(length for _, length in page.strips) <= _OVERLAP_CODED_BYTES
    )


def ccitt_image(tiff: bytes, page: TiffPage) -> CcittImage:
    """Return the page as one CCITT stream; raise UnreadableTiff if its data cannot be decoded.

    Every CCITT page is decoded in full first (`fax.decodecheck`), also the ones embedded as
    they are: a page goes into the PDF only once libtiff has read all of its rows. A page that
    goes in as it is must decode without a single complaint; one that is transcoded (Group 3
    as received) may have damaged rows, which libtiff skips, but not a majority of them:
    that is noise, not a noisy line.
    """
    black_is_1 = page.photometric is Photometric.BLACK_IS_ZERO
    k = _passthrough_k(page)
    if page.compression in _CCITT:
        bits = _check_decodes(tiff, page, as_is=k is not None)
        if k is None:
            # Coded again from the check's own decoding, by libtiff directly (`fax.group4`).
            data = encode_group4(bits, page.width, page.height)
            return CcittImage(data, page.width, page.height, K_GROUP4, black_is_1,
                              transcoded=True)
    if k is None:
        data = _transcode(tiff, page)
        return CcittImage(data, page.width, page.height, K_GROUP4, black_is_1, transcoded=True)
    (data,) = page.strip_data(tiff)
    if page.fill_order == 2:
        data = data.translate(_REVERSE_BITS)
    return CcittImage(data, page.width, page.height, k, black_is_1, transcoded=False)


def _passthrough_k(page: TiffPage) -> int | None:
    """The PDF /K under which the page's data can be embedded as it is, or None."""
    if len(page.strips) != 1:
        return None
    if page.compression is Compression.GROUP4 and not page.t6_options & _T6_UNCOMPRESSED:
        return K_GROUP4
    if (
        page.compression is Compression.GROUP3
        and page.clean
        and not page.t4_options & _T4_UNCOMPRESSED
    ):
        return K_GROUP3_2D if page.t4_options & _T4_2D else K_GROUP3_1D
    return None


def _check_decodes(tiff: bytes, page: TiffPage, *, as_is: bool) -> bytes:
    """The decoded page when it is to be coded again (not `as_is`), else b""."""
    rows = [
        min(page.rows_per_strip, page.height - first)
        for first in range(0, page.height, page.rows_per_strip)
    ]
    report = decode_page(_single_page(tiff, page), rows, page.width, keep=not as_is)
    # A page coded again may have damaged rows, but every strip must be read: a strip libtiff
    # cannot read at all failed the page when it was decoded a second time through Pillow.
    if report.clean or (not as_is and report.damaged_rows * 2 <= report.rows
                        and not report.unread_strips):
        return report.bits
    raise UnreadableTiff(
        f"image data cannot be decoded ({report.damaged_rows} of {report.rows} rows damaged: "
        f"{report.first_problem})",
        page.number,
    )


def _single_page(tiff: bytes, page: TiffPage) -> bytes:
    """The page alone in a TIFF of its own, carrying only the tags we checked."""
    # Hand Pillow a one-page file with only the tags we checked: a damaged page cannot derail
    # the others, and nothing else in the sender's file (EXIF, ICC, odd tags) reaches Pillow.
    # Photometric is written as BlackIsZero whatever the file said: Pillow then copies the bits
    # unchanged in both directions, which keeps the coded colours (see module docstring).
    tags: dict[int, int | float] = {
        Tag.IMAGE_WIDTH: page.width,
        Tag.IMAGE_LENGTH: page.height,
        Tag.BITS_PER_SAMPLE: 1,
        Tag.COMPRESSION: page.compression,
        Tag.PHOTOMETRIC: Photometric.BLACK_IS_ZERO,
        Tag.FILL_ORDER: page.fill_order,
        Tag.SAMPLES_PER_PIXEL: 1,
        Tag.ROWS_PER_STRIP: page.rows_per_strip,
    }
    if page.compression is Compression.GROUP3:
        tags[Tag.T4_OPTIONS] = page.t4_options
    if page.compression is Compression.GROUP4:
        tags[Tag.T6_OPTIONS] = page.t6_options
    return build_tiff([PageSpec(tags, page.strip_data(tiff))])


def _transcode(tiff: bytes, page: TiffPage) -> bytes:
    """Decode the page with libtiff and code it again as a single Group 4 strip."""
    single = _single_page(tiff, page)
    out = io.BytesIO()
    # Pillow and libtiff raise many exception types on bad data (OSError, ValueError,
    # SyntaxError, EOFError, struct.error, DecompressionBombError, warnings turned errors by
    # -W error...). All of them mean the same here: this page's data cannot be decoded.
    try:
        with Image.open(io.BytesIO(single), formats=["TIFF"]) as image:
            image.load()
            if image.mode != "1" or image.size != (page.width, page.height):
                raise UnreadableTiff(f"decoded as {image.mode} {image.size}", page.number)
            # One strip for the whole page: PDF's decoder cannot restart at strip boundaries.
            image.save(
                out, "TIFF", compression="group4", tiffinfo={Tag.ROWS_PER_STRIP: page.height}
            )
    except UnreadableTiff:
        raise
    except Exception as exc:
        raise UnreadableTiff(f"image data cannot be decoded ({exc})", page.number) from exc
    (written,) = read_pages(out.getvalue())
    if written.compression is not Compression.GROUP4 or len(written.strips) != 1:
        # Our own re-encoding went wrong: a bug here, not a bad file.
        raise RuntimeError(f"libtiff wrote {written.compression!r} in {len(written.strips)} strips")
    (data,) = written.strip_data(out.getvalue())
    return data if written.fill_order == 1 else data.translate(_REVERSE_BITS)
