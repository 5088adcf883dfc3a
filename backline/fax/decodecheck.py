"""Decode a page's coded data with libtiff, as the proof that it decodes, before the TIFF may go.

Why this exists: a page embedded in the PDF as it is was never decoded, so random bytes declared
as Group 4 became a "valid" PDF and the TIFF was deleted. libtiff's fax decoder does not fail on
bad data, it reports each bad row through its error and warning handlers and goes on; Pillow
silences those. So libtiff is called here directly (ctypes), with handlers of our own on each
file (libtiff >= 4.5 `TIFFOpenOptions`, so no global state and no stderr noise), and every report
counts against the page.

Memory stays bounded: one page at a time, one strip buffer of packed bits (at most
`MAX_PAGE_PIXELS / 8` bytes), the one-page file in a memfd, and libtiff's own allocations capped.
The libtiff is Pillow's own copy if it has one (a wheel bundles it), else the system's.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import PIL

from backline.fax.errors import UnreadableTiff

# libtiff may allocate no more than this at once (its default is 256 MB).
_MAX_LIBTIFF_ALLOC = 64 * 2**20
_MESSAGE_BYTES = 240
# "Bad code word at line 12 of strip 0 (x 40)", "Premature EOF at line 7 of strip 1 (x 0)".
_AT_LINE = re.compile(rb"at line (\d+) of strip (\d+)")
_PREMATURE_EOF = b"Premature EOF"
# Alternating pixels, one way and then the other: see the strip loop in `decode_page`.
_FILLS = (0x55, 0xAA)

# int handler(TIFF*, void* user_data, const char* module, const char* fmt, va_list ap)
_HANDLER = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
    ctypes.c_void_p,
)  # fmt: skip


@dataclass(frozen=True)
class DecodeReport:
    """What decoding a page found: how many of its rows libtiff reported damaged, and the first
    report in its words (empty when the page decoded cleanly)."""

    rows: int
    damaged_rows: int
    first_problem: str
    # The decoded page, MSB first, rows of (width + 7) // 8 bytes, when asked for (`keep`);
    # rows libtiff never wrote are coded white (0 bits).
    bits: bytes = b""
    # Strips libtiff could not read at all (TIFFReadEncodedStrip failed), not merely damaged.
    unread_strips: int = 0

    @property
    def clean(self) -> bool:
        return not self.first_problem


class _Libtiff:
    """The few libtiff calls we need, typed for ctypes."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        lib.TIFFOpenOptionsAlloc.restype = ctypes.c_void_p
        lib.TIFFOpenOptionsFree.argtypes = [ctypes.c_void_p]
        for kind in ("Error", "Warning"):
            setter = getattr(lib, f"TIFFOpenOptionsSet{kind}HandlerExtR")
            setter.argtypes = [ctypes.c_void_p, _HANDLER, ctypes.c_void_p]
        lib.TIFFOpenOptionsSetMaxSingleMemAlloc.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
        lib.TIFFFdOpenExt.restype = ctypes.c_void_p
        lib.TIFFFdOpenExt.argtypes = [
            ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.TIFFReadEncodedStrip.restype = ctypes.c_ssize_t
        lib.TIFFReadEncodedStrip.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_ssize_t,
        ]  # fmt: skip
        lib.TIFFClose.argtypes = [ctypes.c_void_p]
        lib.TIFFWriteEncodedStrip.restype = ctypes.c_ssize_t
        lib.TIFFWriteEncodedStrip.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_ssize_t,
        ]  # fmt: skip
        lib.TIFFSetField.restype = ctypes.c_int  # variadic: arguments passed as c_int below
        self.lib = lib
        libc = ctypes.CDLL(None)
        libc.vsnprintf.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p,
        ]  # fmt: skip
        self.vsnprintf = libc.vsnprintf


@functools.cache
def _libtiff() -> _Libtiff:
    bundled = sorted((Path(PIL.__file__).parent.parent / "pillow.libs").glob("libtiff*.so*"))
    found = [str(p) for p in bundled] + [ctypes.util.find_library("tiff") or ""]
    problems = []
    for path in filter(None, found):
        try:
            return _Libtiff(path)
        except (OSError, AttributeError) as exc:  # absent, or older than 4.5
            problems.append(f"{path}: {exc}")
    raise UnreadableTiff(f"no libtiff >= 4.5 to check the image data ({'; '.join(problems)})")


@contextlib.contextmanager
def opened(lib: _Libtiff, fd: int, name: bytes, mode: bytes
           ) -> Iterator[tuple[int, list[bytes]]]:
    """libtiff's handle on a duplicate of ``fd`` (0 if it cannot open it) and the messages it
    gives while open, which go to that list, not to stderr; its allocations bounded (a page's
    own header cannot make it take more than _MAX_LIBTIFF_ALLOC).  Closed on leaving."""
    messages: list[bytes] = []

    def handler(_tif: int, _user: int, module: bytes, fmt: bytes, ap: int) -> int:
        text = ctypes.create_string_buffer(_MESSAGE_BYTES)
        lib.vsnprintf(text, _MESSAGE_BYTES, fmt, ap)
        messages.append((module or b"") + b": " + text.value)
        return 1  # handled: libtiff's global handler (stderr) is not called

    callback = _HANDLER(handler)  # kept referenced until TIFFClose below
    options = lib.lib.TIFFOpenOptionsAlloc()
    if not options:
        raise MemoryError("libtiff could not allocate its open options")
    try:
        lib.lib.TIFFOpenOptionsSetErrorHandlerExtR(options, callback, None)
        lib.lib.TIFFOpenOptionsSetWarningHandlerExtR(options, callback, None)
        lib.lib.TIFFOpenOptionsSetMaxSingleMemAlloc(options, _MAX_LIBTIFF_ALLOC)
        libtiff_fd = os.dup(fd)
        tif = lib.lib.TIFFFdOpenExt(libtiff_fd, name, mode, options)
        if not tif:
            os.close(libtiff_fd)  # libtiff closes the descriptor only once it has opened it
            yield 0, messages
            return
        try:
            yield tif, messages
        finally:
            lib.lib.TIFFClose(tif)
    finally:
        lib.lib.TIFFOpenOptionsFree(options)


def decode_page(single_page_tiff: bytes, strip_rows: Sequence[int], width: int, *,
                keep: bool = False) -> DecodeReport:
    """Decode every strip of a one-page TIFF (as `fax.ccitt` builds them) and report damage.

    `strip_rows` is the number of rows in each strip. With `keep`, the decoded page comes
    back in the report (a page to be coded again: it is not decoded a second time). Raises
    UnreadableTiff only if libtiff cannot open the file at all (which our own one-page files
    never should).
    """
    lib = _libtiff()
    fd = os.memfd_create("fax-page", os.MFD_CLOEXEC)
    try:
        view = memoryview(single_page_tiff)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        with opened(lib, fd, b"fax-page", b"r") as (tif, messages):
            if not tif:
                raise UnreadableTiff(f"libtiff cannot open the page ({_said(messages)})")
            row_bytes = (width + 7) // 8
            page = ctypes.create_string_buffer(sum(strip_rows) * row_bytes) if keep else None
            reused = None if keep else ctypes.create_string_buffer(max(strip_rows) * row_bytes)
            damaged: set[tuple[int, int]] = set()
            first_row = unread = 0
            for strip, rows in enumerate(strip_rows):
                before = len(messages)
                unwritten = rows
                buffer = reused if page is None else \
                    (ctypes.c_char * (rows * row_bytes)).from_buffer(page, first_row * row_bytes)
                assert buffer is not None
                # A decoder that meets an end-of-block mark early stops without a word; the
                # rows it never wrote still hold the fill. Any fill could be a real row, so a
                # row counts as unwritten only if it kept both of two different fills.
                for fill in _FILLS:
                    ctypes.memset(buffer, fill, rows * row_bytes)
                    got = lib.lib.TIFFReadEncodedStrip(tif, strip, buffer, rows * row_bytes)
                    if got < 0:
                        break
                    unwritten = min(unwritten, _trailing_fill_rows(buffer, rows, row_bytes, fill))
                    if not unwritten:
                        break
                if got < 0:
                    unread += 1
                    damaged.update((strip, row) for row in range(rows))
                    if len(messages) == before:
                        messages.append(b"strip %d could not be read" % strip)
                elif unwritten:
                    damaged.update((strip, row) for row in range(rows - unwritten, rows))
                    messages.append(
                        b"the data of strip %d ends after %d of its %d rows"
                        % (strip, rows - unwritten, rows)
                    )
                for message in messages[before:]:
                    damaged.update(_rows_named(message, strip, rows))
                if page is not None and (got < 0 or unwritten):
                    left = rows if got < 0 else unwritten
                    ctypes.memset(ctypes.byref(buffer, (rows - left) * row_bytes), 0,
                                  left * row_bytes)
                first_row += rows
            bits = page.raw if page is not None else b""
    finally:
        os.close(fd)
    total = sum(strip_rows)
    return DecodeReport(total, min(len(damaged), total), _said(messages), bits, unread)


def _trailing_fill_rows(buffer: ctypes.Array[ctypes.c_char], rows: int, row_bytes: int,
                        fill: int) -> int:
    """How many rows at the end of the strip are nothing but `fill` bytes."""
    data = memoryview(buffer).cast("B")[: rows * row_bytes]
    blank = bytes([fill]) * row_bytes
    count = 0
    while count < rows:
        end = (rows - count) * row_bytes
        if data[end - row_bytes : end] != blank:
            break
        count += 1
    return count


def _rows_named(message: bytes, strip: int, rows: int) -> set[tuple[int, int]]:
    """The rows a libtiff report is about: the one it names, and after a premature end of the
    data every row left in the strip; a report that names no row counts as one."""
    match = _AT_LINE.search(message)
    line = min(int(match.group(1)), rows - 1) if match else 0
    if _PREMATURE_EOF in message:
        return {(strip, row) for row in range(line, rows)}
    return {(strip, line)}


def _said(messages: list[bytes]) -> str:
    if not messages:
        return ""
    first = messages[0].decode("ascii", "replace")
    more = f" and {len(messages) - 1} more" if len(messages) > 1 else ""
    return f"{first}{more}"
