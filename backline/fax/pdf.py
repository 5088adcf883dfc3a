"""Turn a received fax TIFF into a PDF: bytes in, bytes out, nothing else touched.

One PDF page per fax page, each exactly the fax page's physical size (see `fax.geometry`), with
the page's CCITT data embedded as it is wherever possible (see `fax.ccitt`), so the PDF stays
bi-level and about the TIFF's size and most pages are never decoded. A header line on each page
says when the fax came, from whom, to which number, and which page of how many.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

from reportlab.pdfbase.pdfmetrics import stringWidth

from backline.fax.ccitt import ccitt_images
from backline.fax.errors import UnreadableTiff
from backline.fax.geometry import PageGeometry, page_geometry
from backline.fax.header import FaxHeader, header_text
from backline.fax.pdfwrite import FONT_NAME, IMAGE_NAME, PdfPage, pdf_number, pdf_string, write_pdf
from backline.fax.tiff import read_pages

# The header takes a band at the top of each page, and the fax image is scaled down (by 1.5% on
# a Letter page, the same both ways) to sit below it. Drawing over the image instead would hide
# the top of the page, where the sender's own header line is printed.
HEADER_BAND_PT = 12.0
_FONT = "Helvetica"  # must match the font object in fax.pdfwrite
_FONT_SIZES = (7.0, 6.5, 6.0, 5.5, 5.0)
_MARGIN_PT = 6.0
_GAP_PT = 12.0
# The PDF is built, written and read back in memory, so its size is bounded. Pages embedded as
# they are cannot outgrow the TIFF (pages may not share data, `fax.tiff`), but a transcoded
# page can: a checkerboard page is tiny in PackBits and 160 times that in Group 4. So the PDF
# may be 4 times the TIFF (transcoded fax pages shrink; 0.65 in bench/fax_pdf.py), or 16 MiB
# for a small TIFF, and never over 64 MiB, the largest TIFF the intake reads; 200 pages of a
# dense fax are well under that.
MAX_PDF_BYTES = 64 * 2**20
_PDF_BYTES_FLOOR = 16 * 2**20
_PDF_PER_TIFF_BYTE = 4
_PAGE_OVERHEAD_BYTES = 600  # a page's objects around its two streams, generously


@dataclass(frozen=True)
class FaxPdf:
    """The PDF and what it should contain, for `fax.verify.verify_pdf` after it is stored.

    `notes` say what had to be assumed (e.g. a missing resolution), for the journal.
    `transcoded` counts pages that had to be decoded and coded again as Group 4.
    """

    pdf: bytes
    pages: tuple[PageGeometry, ...]
    notes: tuple[str, ...]
    transcoded: int


def tiff_to_pdf(tiff: bytes, header: FaxHeader) -> FaxPdf:
    """Convert a fax TIFF (Group 3 1D/2D, Group 4, uncompressed) into a PDF with a header.

    Raises fax.errors.UnreadableTiff, with the reason, for any file that cannot be converted:
    every page's structure and size is checked before any page is decoded, every CCITT page is
    then decoded in full (`fax.ccitt`), and the PDF may not outgrow its bound (see above).
    """
    pages = read_pages(tiff)
    sized = [page_geometry(page) for page in pages]
    geometries = tuple(geometry for geometry, _ in sized)
    notes = tuple(note for _, page_notes in sized for note in page_notes)
    text = header_text(header)
    widest_label = _label(len(pages), len(pages))
    pdf_pages = []
    size, limit = 0, min(MAX_PDF_BYTES, max(_PDF_BYTES_FLOOR, _PDF_PER_TIFF_BYTE * len(tiff)))
    with contextlib.closing(ccitt_images(tiff, pages)) as images:
        for page, geometry, image in zip(pages, geometries, images, strict=True):
            content = _content(geometry, text, _label(page.number, len(pages)), widest_label)
            size += len(image.data) + len(content) + _PAGE_OVERHEAD_BYTES
            if size > limit:
                raise UnreadableTiff(
                    f"the PDF would be over {limit / 2**20:.0f} MiB by page {page.number} "
                    f"(a {len(tiff) / 2**20:.1f} MiB TIFF)"
                )
            pdf_pages.append(PdfPage(geometry.width_pt, geometry.height_pt, content, image))
    title = f"Fax received {header.received_at.isoformat(sep=' ', timespec='minutes')}"
    return FaxPdf(
        write_pdf(pdf_pages, title),
        geometries,
        notes,
        transcoded=sum(page.image.transcoded for page in pdf_pages),
    )


def _label(page: int, pages: int) -> str:
    return f"Page {page} of {pages}"


def _content(geometry: PageGeometry, text: str, label: str, widest_label: str) -> bytes:
    """The page's drawing: the fax image below the header band, then the header line."""
    width, height = geometry.width_pt, geometry.height_pt
    # A page too short to give up the band (well under an inch, already odd) keeps full size.
    scale = (height - HEADER_BAND_PT) / height if height > 2 * HEADER_BAND_PT else 1.0
    size, text = _fit(text, widest_label, width - 2 * _MARGIN_PT - _GAP_PT)
    baseline = height - HEADER_BAND_PT + (HEADER_BAND_PT - size) / 2 + 1.0
    label_x = width - _MARGIN_PT - stringWidth(label, _FONT, size)
    n = pdf_number
    return b"\n".join(
        [
            b"q %s 0 0 %s %s 0 cm %s Do Q"
            % (n(width * scale), n(height * scale), n(width * (1 - scale) / 2), IMAGE_NAME),
            b"BT %s %s Tf %s %s Td %s Tj ET"
            % (FONT_NAME, n(size), n(_MARGIN_PT), n(baseline), pdf_string(text)),
            b"BT %s %s Tf %s %s Td %s Tj ET"
            % (FONT_NAME, n(size), n(label_x), n(baseline), pdf_string(label)),
        ]
    )


@functools.lru_cache(maxsize=16)  # pages mostly share one width: measure the text once
def _fit(text: str, label: str, room: float) -> tuple[float, str]:
    """The largest font size at which text and label fit; at the smallest, `text` is cut."""
    for size in _FONT_SIZES:
        if stringWidth(text + label, _FONT, size) <= room:
            return size, text
    size = _FONT_SIZES[-1]
    while text and stringWidth(text + "..." + label, _FONT, size) > room:
        text = text[:-1]
    return size, text + "..."
