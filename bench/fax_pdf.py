"""Benchmark fax TIFF to PDF: Backline against tiff2pdf (libtiff-tools) and img2pdf.

Run: .venv/bin/python bench/fax_pdf.py [--pages 50] [--runs 5]

Input is a fine-resolution Letter fax drawn by tests/fax_samples.py, stored the ways a fax
server stores it: Group 4 (T.6, the usual case with ECM), Group 3 2D marked clean as spandsp
writes it (both embedded as they are), and Group 3 2D not marked clean (decoded and coded again
as Group 4). Backline also decodes every page once, as the check that it can be (the TIFF is
deleted only after it); tiff2pdf and img2pdf do not. Each tool converts the same bytes; the
best of `runs` wall-clock times counts, so a busy machine hurts less. tiff2pdf runs as a
process, so its time includes starting one (about 1 ms here), which is how it would be used.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.fax_samples

import img2pdf  # type: ignore[import-untyped]
from pypdf import PdfReader

from backline.fax.header import FaxHeader
from backline.fax.pdf import tiff_to_pdf
from backline.fax.verify import verify_pdf
from tests.fax_samples import FINE, Coding, fax_tiff, letter

HEADER = FaxHeader(datetime(2025, 3, 4, 14, 5, tzinfo=UTC), "+49 30 1234567", "+49 30 76", "X")


@dataclass(frozen=True)
class Result:
    tool: str
    seconds: float
    pdf_bytes: int
    pages: int


def best_of(runs: int, convert: Callable[[], bytes]) -> tuple[float, bytes]:
    best, pdf = float("inf"), b""
    for _ in range(runs):
        start = time.perf_counter()
        pdf = convert()
        best = min(best, time.perf_counter() - start)
    return best, pdf


def run_tiff2pdf(tiff_path: Path, pdf_path: Path) -> bytes:
    subprocess.run(
        ["tiff2pdf", "-o", str(pdf_path), str(tiff_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return pdf_path.read_bytes()


def measure(tiff: bytes, runs: int, workdir: Path) -> list[Result]:
    tiff_path = workdir / "fax.tif"
    tiff_path.write_bytes(tiff)
    tools: dict[str, Callable[[], bytes]] = {
        "backline": lambda: tiff_to_pdf(tiff, HEADER).pdf,
        "backline+verify": lambda: _convert_and_verify(tiff),
        "img2pdf": lambda: bytes(img2pdf.convert(tiff)),
    }
    if shutil.which("tiff2pdf"):
        tools["tiff2pdf"] = lambda: run_tiff2pdf(tiff_path, workdir / "tiff2pdf.pdf")
    else:
        print("tiff2pdf not found: apt-get install libtiff-tools", file=sys.stderr)
    results = []
    for name, convert in tools.items():
        convert()  # warm up imports and caches
        seconds, pdf = best_of(runs, convert)
        pages = len(PdfReader(io.BytesIO(pdf)).pages)
        results.append(Result(name, seconds, len(pdf), pages))
    return results


def _convert_and_verify(tiff: bytes) -> bytes:
    result = tiff_to_pdf(tiff, HEADER)
    verify_pdf(result.pdf, result.pages)
    return result.pdf


def report(label: str, tiff: bytes, results: list[Result]) -> None:
    ours = next(r for r in results if r.tool == "backline")
    print(f"\n{label}: {ours.pages} fine pages, TIFF {len(tiff):,} bytes")
    print(f"{'tool':<16} {'pages/s':>9} {'ms':>8} {'PDF/TIFF':>9} {'its time / Backline':>20}")
    for r in results:
        print(
            f"{r.tool:<16} {r.pages / r.seconds:>9.0f} {r.seconds * 1000:>8.1f}"
            f" {r.pdf_bytes / len(tiff):>9.3f} {r.seconds / ours.seconds:>19.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    pages = tuple(letter(FINE, seed) for seed in range(args.pages))
    inputs: list[tuple[str, Coding, bool]] = [
        ("Group 4", "group4", True),
        ("Group 3 2D, clean (spandsp)", "group3_2d", True),
        ("Group 3 2D, not marked clean", "group3_2d", False),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, coding, clean in inputs:
            tiff = fax_tiff(pages, coding=coding, clean=clean)
            report(label, tiff, measure(tiff, args.runs, Path(tmp)))


if __name__ == "__main__":
    main()
