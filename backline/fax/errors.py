"""Errors of the fax TIFF to PDF boundary.

Two kinds, kept apart as h11 does: the *sender's* file was bad (`UnreadableTiff`), or the PDF we
wrote does not read back as promised (`PdfMismatch`). In both cases the caller keeps the TIFF and
still sends the alert; the reason goes into the journal, so it must say what was wrong.
"""

from __future__ import annotations


class FaxConversionError(Exception):
    """Base of this boundary, so a caller can catch both kinds with one clause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnreadableTiff(FaxConversionError):
    """The TIFF cannot become a PDF: corrupt, truncated, too large, or not a fax.

    `page` is 1-based when the problem belongs to one page, None when it is the whole file.
    """

    def __init__(self, reason: str, page: int | None = None) -> None:
        super().__init__(reason if page is None else f"page {page}: {reason}")
        self.page = page


class PdfMismatch(FaxConversionError):
    """The PDF read back does not match the pages it should hold; do not drop the TIFF."""
