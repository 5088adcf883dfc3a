"""Code a decoded fax page as one Group 4 (T.6) strip with libtiff, called directly (ctypes).

A Group 3 page not marked clean is coded again (`fax.ccitt`); it was already decoded in full
as the check that it decodes (`fax.decodecheck`), so those bits are coded here as they are.
Through Pillow the page was decoded a second time and its encoder took 7.5 ms a page: 389 ms
for 50 fine pages where tiff2pdf took 176 ms (bench/fax_pdf.py).
"""

from __future__ import annotations

import ctypes
import os

from backline.fax.decodecheck import _libtiff, opened
from backline.fax.tiff import Compression, Photometric, Tag, read_pages

_COMPRESSION_CCITT_T6 = 4


def encode_group4(bits: bytes, width: int, height: int) -> bytes:
    """``bits`` (MSB first, rows of (width + 7) // 8 bytes) as one Group 4 strip, MSB first.

    Photometric BlackIsZero, as the page was decoded (`fax.ccitt`): the coded colours stay as
    they were.  A failure here is a bug, not a bad file: RuntimeError."""
    lib = _libtiff()
    fd = os.memfd_create("fax-group4", os.MFD_CLOEXEC)
    try:
        with opened(lib, fd, b"fax-group4", b"w") as (tif, messages):
            if not tif:
                raise RuntimeError(f"libtiff cannot write a TIFF: {messages}")
            for tag, value in ((Tag.IMAGE_WIDTH, width), (Tag.IMAGE_LENGTH, height),
                               (Tag.BITS_PER_SAMPLE, 1), (Tag.SAMPLES_PER_PIXEL, 1),
                               (Tag.COMPRESSION, _COMPRESSION_CCITT_T6),
                               (Tag.PHOTOMETRIC, Photometric.BLACK_IS_ZERO),
                               (Tag.FILL_ORDER, 1), (Tag.ROWS_PER_STRIP, height)):
                if lib.lib.TIFFSetField(ctypes.c_void_p(tif), ctypes.c_uint32(tag),
                                        ctypes.c_int(value)) != 1:
                    raise RuntimeError(f"libtiff refused tag {tag}: {messages}")
            if lib.lib.TIFFWriteEncodedStrip(tif, 0, bits, len(bits)) < 0:
                raise RuntimeError(f"libtiff could not code the page: {messages}")
        written = os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)
    (page,) = read_pages(written)
    if page.compression is not Compression.GROUP4 or len(page.strips) != 1 \
            or page.fill_order != 1:
        raise RuntimeError(f"libtiff wrote {page.compression!r} in {len(page.strips)} strips")
    (data,) = page.strip_data(written)
    return data
