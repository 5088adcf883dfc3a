"""Check that a stored PDF holds the pages it should, before the original TIFF may go.

Read back with pypdf in strict mode rather than by pattern-matching our own output: pypdf parses
the cross-reference table and trailer the way a viewer does, so a truncated or garbled file fails
here. Each page must have the expected size, no rotation, and exactly one image: the fax page,
with the expected pixel size and CCITT parameters.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from pypdf import PageObject, PdfReader
from pypdf.errors import PyPdfError
from pypdf.generic import DictionaryObject

from backline.fax.errors import PdfMismatch
from backline.fax.geometry import PageGeometry

# Sizes are written with 4 decimals; 0.05 pt is 1/1440 in.
_TOLERANCE_PT = 0.05


def verify_pdf(pdf: bytes, expected: Sequence[PageGeometry]) -> None:
    """Return if `pdf` has exactly the `expected` pages; raise PdfMismatch saying what differs."""
    try:
        reader = PdfReader(io.BytesIO(pdf), strict=True)
        pages = list(reader.pages)
        if len(pages) != len(expected):
            raise PdfMismatch(f"{len(pages)} pages, expected {len(expected)}")
        for number, (page, geometry) in enumerate(zip(pages, expected, strict=True), start=1):
            _check_page(page, geometry, number)
    except PdfMismatch:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        # pypdf signals a malformed file with these besides its own errors.
        raise PdfMismatch(f"unreadable PDF ({type(exc).__name__}: {exc})") from exc


def _check_page(page: PageObject, geometry: PageGeometry, number: int) -> None:
    box = page.mediabox
    size = (float(box.width), float(box.height))
    want = (geometry.width_pt, geometry.height_pt)
    if any(abs(got - exp) > _TOLERANCE_PT for got, exp in zip(size, want, strict=True)):
        raise PdfMismatch(
            f"page {number} is {size[0]:.2f} x {size[1]:.2f} pt, "
            f"expected {want[0]:.2f} x {want[1]:.2f}"
        )
    if page.rotation % 360:
        raise PdfMismatch(f"page {number} is rotated by {page.rotation}")
    images = [image for image in _xobjects(page) if image.get("/Subtype") == "/Image"]
    if len(images) != 1:
        raise PdfMismatch(f"page {number} has {len(images)} images, expected 1")
    image = images[0]
    params = image.get("/DecodeParms")
    found = (
        image.get("/Width"),
        image.get("/Height"),
        image.get("/Filter"),
        params.get("/Columns") if isinstance(params, DictionaryObject) else None,
        params.get("/Rows") if isinstance(params, DictionaryObject) else None,
    )
    wanted = (
        geometry.width_px,
        geometry.height_px,
        "/CCITTFaxDecode",
        geometry.width_px,
        geometry.height_px,
    )
    if found != wanted:
        raise PdfMismatch(f"page {number} image is {found}, expected {wanted}")


def _xobjects(page: PageObject) -> list[DictionaryObject]:
    resources = page.get("/Resources")
    if not isinstance(resources, DictionaryObject):
        return []
    xobjects = resources.get("/XObject")
    if not isinstance(xobjects, DictionaryObject):
        return []
    resolved = (ref.get_object() for ref in xobjects.values())
    return [obj for obj in resolved if isinstance(obj, DictionaryObject)]
