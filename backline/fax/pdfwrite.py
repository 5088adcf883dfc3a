"""Serialise a fax PDF: one image and a few lines of text per page, nothing else.

Written by hand rather than through reportlab's canvas, for three reasons measured or found while
building it: reportlab has no public call for an image with our own /CCITTFaxDecode stream (it
took its private `_doc`/`_code`/`_formsinuse` attributes); its object formatting costs about
0.15 ms a page, which made a 50-page conversion slower than tiff2pdf; and here every byte of
text that reaches the file goes through `pdf_string`, so what a hostile header can do is easy to
see. The structure is fixed and small; tests read it back with pypdf (strict), pdfium and
poppler. reportlab still supplies the font metrics (`fax.pdf`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backline.fax.ccitt import K_GROUP4, CcittImage

# The page content refers to these resource names.
IMAGE_NAME = b"/Fax"
FONT_NAME = b"/F1"
# Helvetica is one of the 14 fonts every viewer has, so nothing is embedded. Python's cp1252 is
# its WinAnsiEncoding, the character set `fax.header.clean_text` reduces untrusted text to.
FONT_ENCODING = "cp1252"
_CATALOG, _PAGES, _FONT, _INFO, _FIRST_PAGE = 1, 2, 3, 4, 5
_OBJECTS_PER_PAGE = 3  # page, content stream, image


@dataclass(frozen=True)
class PdfPage:
    """One page: its size in points, its content stream, and the image the content draws."""

    width_pt: float
    height_pt: float
    content: bytes
    image: CcittImage


def pdf_string(text: str) -> bytes:
    """`text` as a PDF literal string in WinAnsi, written in printable ASCII only.

    Parentheses and backslash are escaped and every other byte outside 32..126 is an octal
    escape, so no input can end the string early or put a line break into the content stream.
    Characters WinAnsi lacks become '?'.
    """
    out = bytearray(b"(")
    for byte in text.encode(FONT_ENCODING, "replace"):
        if byte in b"()\\":
            out += b"\\" + bytes([byte])
        elif 32 <= byte < 127:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    out += b")"
    return bytes(out)


def pdf_number(value: float) -> bytes:
    """A real number as PDF writes it: no exponent, at most 4 decimals."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return (text if text not in ("", "-0") else "0").encode("ascii")


def write_pdf(pages: Sequence[PdfPage], title: str) -> bytes:
    """Return the complete PDF file for `pages`, in order, with `title` in its Info dictionary."""
    objects: list[bytes] = [b""] * (_FIRST_PAGE - 1 + _OBJECTS_PER_PAGE * len(pages))
    kids = []
    for index, page in enumerate(pages):
        number = _FIRST_PAGE + _OBJECTS_PER_PAGE * index
        kids.append(b"%d 0 R" % number)
        objects[number - 1] = (
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %s %s] /Contents %d 0 R"
            b" /Resources << /Font << %s %d 0 R >> /XObject << %s %d 0 R >>"
            b" /ProcSet [/PDF /Text /ImageB] >> >>"
            % (
                _PAGES,
                pdf_number(page.width_pt),
                pdf_number(page.height_pt),
                number + 1,
                FONT_NAME,
                _FONT,
                IMAGE_NAME,
                number + 2,
            )
        )
        objects[number] = _stream(b"", page.content)
        objects[number + 1] = _image(page.image)
    objects[_CATALOG - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % _PAGES
    objects[_PAGES - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(kids),
        len(pages),
    )
    objects[_FONT - 1] = (
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    objects[_INFO - 1] = b"<< /Title %s /Producer (Backline) >>" % pdf_string(title)
    return _assemble(objects)


def _image(image: CcittImage) -> bytes:
    params = b"/K %d /Columns %d /Rows %d /BlackIs1 %s" % (
        image.k,
        image.width,
        image.height,
        b"true" if image.black_is_1 else b"false",
    )
    if image.k != K_GROUP4:
        # TIFF Class F writers (spandsp) leave out Group 3's end-of-page RTC; Rows says where
        # the page ends instead. Group 4 streams from libtiff always end in EOFB.
        params += b" /EndOfBlock false"
    head = (
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /BitsPerComponent 1"
        b" /ColorSpace /DeviceGray /Filter /CCITTFaxDecode /DecodeParms << %s >>"
        % (image.width, image.height, params)
    )
    return _stream(head, image.data)


def _stream(entries: bytes, data: bytes) -> bytes:
    # The end-of-line before endstream is what the PDF spec asks for; /Length does not count it.
    head = entries + b" " if entries else b""
    return b"<< %s/Length %d >>\nstream\n%s\nendstream" % (head, len(data), data)


def _assemble(objects: list[bytes]) -> bytes:
    # The second line's high bytes tell transfer tools the file is binary (PDF spec 7.5.2).
    parts = [b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"]
    offsets = []
    position = len(parts[0])
    for number, body in enumerate(objects, start=1):
        chunk = b"%d 0 obj\n%s\nendobj\n" % (number, body)
        offsets.append(position)
        parts.append(chunk)
        position += len(chunk)
    # Each cross-reference entry is exactly 20 bytes, ending in space + newline.
    xref = [b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)]
    xref += [b"%010d 00000 n \n" % offset for offset in offsets]
    parts += xref
    parts.append(
        b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objects) + 1, _CATALOG, _INFO, position)
    )
    return b"".join(parts)
