"""Decide each page's physical size from its pixel size and resolution.

Fax resolution is anisotropic: 204 dots per inch across, and 98 ("standard"), 196 ("fine") or 391
("superfine") lines per inch down. Sizing a page by its own two resolutions is what keeps a
standard page from being squashed to half height and a long page from being cut off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backline.fax.errors import UnreadableTiff
from backline.fax.tiff import TiffPage

POINTS_PER_INCH = 72.0
# PDF 1.x viewers need not show pages longer than 200 in (14400 pt); refuse rather than clip.
MAX_PAGE_POINTS = 14_400.0

# ITU-T T.4 scan-line widths in pixels, with the horizontal resolution each one is scanned at
# (A4, B4 and A3 paper at 4, 8, ~12 and 16 dots per mm; 200 and 204 dpi both give 1728).
# A width outside this table is not something a fax machine sends.
FAX_WIDTHS: dict[int, float] = {
    864: 102.0, 1024: 102.0, 1216: 102.0,
    1728: 204.0, 2048: 204.0, 2432: 204.0,
    2592: 300.0, 3072: 300.0, 3648: 300.0,
    3456: 408.0, 4096: 408.0, 4864: 408.0,
}  # fmt: skip

# A stored resolution is believed only if it gives a plausible fax page: 7.5 to 12.5 in wide,
# and rows between 0.4x (standard is 98/204) and 2.5x (superfine is 391/204) of the columns.
_WIDTH_INCHES = (7.5, 12.5)
_ROW_TO_COLUMN_RATIO = (0.4, 2.5)
# Without a usable vertical resolution, pick the fax one that makes the page closest to this
# length: between Letter (11 in) and A4 (11.7 in), and below legal (14 in).
_USUAL_LENGTH_INCHES = 11.5
_VERTICAL_STEPS = (98.0 / 204.0, 196.0 / 204.0, 391.0 / 204.0)  # standard, fine, superfine


@dataclass(frozen=True)
class PageGeometry:
    """A page's pixel size and resolution; its size in PDF points follows from them."""

    width_px: int
    height_px: int
    x_dpi: float
    y_dpi: float

    @property
    def width_pt(self) -> float:
        return self.width_px * POINTS_PER_INCH / self.x_dpi

    @property
    def height_pt(self) -> float:
        return self.height_px * POINTS_PER_INCH / self.y_dpi


def page_geometry(page: TiffPage) -> tuple[PageGeometry, tuple[str, ...]]:
    """Return the page's geometry and notes on any resolution we had to assume.

    Raises UnreadableTiff if the width is not a fax width or the page would be too long for PDF.
    """
    nominal_x = FAX_WIDTHS.get(page.width)
    if nominal_x is None:
        raise UnreadableTiff(
            f"width {page.width} px is not a fax scan-line width "
            f"({', '.join(str(w) for w in sorted(FAX_WIDTHS))})",
            page.number,
        )
    notes: list[str] = []
    x_dpi = page.x_dpi
    if x_dpi is None or not _WIDTH_INCHES[0] <= page.width / x_dpi <= _WIDTH_INCHES[1]:
        notes.append(
            f"page {page.number}: horizontal resolution {_shown(x_dpi)}, assumed {nominal_x:g} dpi"
        )
        x_dpi = nominal_x
    y_dpi = page.y_dpi
    if y_dpi is None or not _ROW_TO_COLUMN_RATIO[0] <= y_dpi / x_dpi <= _ROW_TO_COLUMN_RATIO[1]:
        guessed = _guess_vertical(page.height, x_dpi)
        notes.append(
            f"page {page.number}: vertical resolution {_shown(y_dpi)}, "
            f"assumed {guessed:.0f} lpi from its {page.height} lines"
        )
        y_dpi = guessed
    geometry = PageGeometry(page.width, page.height, x_dpi, y_dpi)
    if geometry.height_pt > MAX_PAGE_POINTS:
        raise UnreadableTiff(
            f"{geometry.height_pt / POINTS_PER_INCH:.0f} in long, over the PDF limit of 200 in",
            page.number,
        )
    return geometry, tuple(notes)


def _guess_vertical(lines: int, x_dpi: float) -> float:
    """The fax vertical resolution that makes `lines` closest to a usual page length.

    Compared on a log scale so that twice too long and half too short weigh the same: 1078 lines
    becomes standard Letter (not fine half-Letter), 2156 fine Letter, 1372 standard legal.
    """
    candidates = [x_dpi * step for step in _VERTICAL_STEPS]
    return min(candidates, key=lambda dpi: abs(math.log(lines / dpi / _USUAL_LENGTH_INCHES)))


def _shown(dpi: float | None) -> str:
    return "missing" if dpi is None else f"{dpi:g} dpi implausible"
