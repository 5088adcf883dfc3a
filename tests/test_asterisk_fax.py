"""Fax intake on the real Asterisk: a second Asterisk sends real faxes (SendFax, T.38) to the
practice, which receives them (ReceiveFax), stores the TIFF, makes a verified PDF of it and
journals the fax once; or refuses the fax during the call, so that the sender's SendFax fails.

Each test runs its own practice PBX and its own sender (own ports, own trees).  A fax page
takes real time (about 10 s standard, 20 s fine at 14.4 kbit/s): the three-page fax is the
long one, the refusals send one page and end within seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from backline.core.outage import Mode, Via
from backline.journal import Attempt, AttemptKind, Delivery, Outcome
from backline.pbx.ports import REJECT_CONTEXT, CdrRow
from tests.fax_samples import FINE, STANDARD, fax_tiff, letter
from tests.harness.fax_sender import (
    FaxSender,
    fax_sender,
    fax_stats,
    spool_of,
    wait_for_cdr,
    wait_for_pages,
)
from tests.harness.practice_pbx import PracticePbx, practice_pbx

pytestmark = pytest.mark.asterisk

FAX_NUMBER = "+13125550109"  # carries fax only
VOICE_ONLY = "+13125550100"  # the practice's main line: voice only
STATION = "+1 720 555 0199"
LETTER_PT = (612.0, 792.0)


@asynccontextmanager
async def faxing(tmp: Path, name: str) -> AsyncIterator[tuple[PracticePbx, FaxSender]]:
    """The test practice with fax intake wired as ``backline up`` wires it, and a sender."""
    async with practice_pbx(tmp, name) as pbx:
        faxes = pbx.controller.faxes
        faxes.spool = spool_of(pbx.instance)  # as `backline up` sets it for its own instance
        faxes.store = tmp / "fax"
        pbx.driver.faxes = faxes  # the harness builds the driver without it
        async with fax_sender(pbx, name, station=STATION) as sender:
            yield pbx, sender


def fax_attempts(p: PracticePbx) -> list[Attempt]:
    return [a for a in p.controller.journal.attempts(limit=100) if a.kind is AttemptKind.FAX]


async def call_over(p: PracticePbx, context: str, within: float = 30) -> CdrRow:
    """The practice's CDR row of the fax call, once Asterisk is done with it (and so with its
    h extension, which tells the controller)."""
    assert p.controller.cdr_path is not None
    return await asyncio.to_thread(wait_for_cdr, p.controller.cdr_path,
                                   lambda row: row.context == context, within)


def page_sizes(pdf: Path) -> list[tuple[float, float, int]]:
    """(width pt, height pt, image rows) of each page."""
    out = []
    for page in PdfReader(pdf, strict=True).pages:
        resources = page["/Resources"]
        assert isinstance(resources, DictionaryObject)
        xobjects = resources["/XObject"]
        assert isinstance(xobjects, DictionaryObject)
        (image,) = [ref.get_object() for ref in xobjects.values()]
        out.append((float(page.mediabox.width), float(page.mediabox.height),
                    int(image["/Height"])))
    return out


def nothing_left_behind(p: PracticePbx) -> None:
    """No TIFF in the PBX's spool or the fax directory: converted ones are gone once their
    PDF was verified and journaled."""
    assert list(spool_of(p.instance).glob("fax-*.tif")) == []
    assert list(p.controller.faxes.store.glob("*.tif")) == []


@pytest.mark.parametrize("mode", [Mode.NORMAL, Mode.OUTAGE])
async def test_a_three_page_fax_over_t38_becomes_a_letter_pdf_journaled_once(
        tmp_path: Path, mode: Mode) -> None:
    async with faxing(tmp_path, f"fx3-{mode.value}") as (pbx, sender):
        if mode is Mode.OUTAGE:
            await pbx.controller.switch(Mode.OUTAGE, by="test", via=Via.CLI, reason="drill")
        # Standard and fine pages mixed: each must come out Letter-sized, none squashed.
        document = sender.document("three", fax_tiff(
            (letter(STANDARD, 1), letter(FINE, 2), letter(STANDARD, 3)), coding="group3"))
        sent = await sender.send(FAX_NUMBER, document, within=300)
        assert (sent.answered, sent.status, sent.pages) == (True, "SUCCESS", 3), sent
        row = await call_over(pbx, "backline-fax")
        (fax,) = fax_attempts(pbx)
        assert (fax.key, fax.recipient, fax.outcome, fax.mode) == (
            f"fax:{row.uniqueid}", FAX_NUMBER, Outcome.RECEIVED, mode)
        assert fax.delivery is (Delivery.HELD if mode is Mode.OUTAGE else Delivery.NOT_NEEDED)
        assert "3 pages" in fax.detail and f"station {STATION}" in fax.detail, fax.detail
        pdf = Path(fax.file)
        assert pdf.parent == pbx.controller.faxes.store and pdf.suffix == ".pdf"
        sizes = page_sizes(pdf)
        assert [rows for _, _, rows in sizes] == [1078, 2156, 1078]  # as sent, per page
        for width, height, _ in sizes:
            assert abs(width - LETTER_PT[0]) <= 0.01 * LETTER_PT[0], sizes
            assert abs(height - LETTER_PT[1]) <= 0.01 * LETTER_PT[1], sizes
        nothing_left_behind(pbx)
        # T.38 carried it: spandsp's counters on both sides, not G.711 audio.
        for stats in (fax_stats(pbx.instance), sender.stats()):
            assert stats["Spandsp T.38"]["Success"] == 1, stats
            assert stats["Spandsp G.711"]["Success"] == 0, stats
        # The PBX's own record names the same fax: importing it adds nothing.
        assert await pbx.controller.import_pbx_record() == 0
        assert len(fax_attempts(pbx)) == 1
        print(f"3-page fax: {sent.seconds:.1f} s on the line")


async def test_with_the_controller_down_the_pbx_receives_alone_and_the_import_converts(
        tmp_path: Path) -> None:
    async with faxing(tmp_path, "fx-down") as (pbx, sender):
        await pbx.controller.switch(Mode.OUTAGE, by="test", via=Via.CLI, reason="drill")
        await pbx.driver.stop()  # FastAGI and AMI gone: the dialplan falls back on its own
        document = sender.document("alone", fax_tiff((letter(STANDARD, 4),)))
        sent = await sender.send(FAX_NUMBER, document, within=120)
        assert (sent.status, sent.pages) == ("SUCCESS", 1), sent
        row = await call_over(pbx, "backline-fax")
        assert fax_attempts(pbx) == []
        spooled = spool_of(pbx.instance) / f"fax-{row.uniqueid}.tif"
        assert spooled.stat().st_size > 0  # kept by the PBX until the controller returns
        assert await pbx.controller.import_pbx_record() == 1
        (fax,) = fax_attempts(pbx)
        assert (fax.key, fax.outcome, fax.mode, fax.delivery) == (
            f"fax:{row.uniqueid}", Outcome.RECEIVED, Mode.OUTAGE, Delivery.HELD)
        assert "controller was away" in fax.detail and "1 page" in fax.detail
        assert len(page_sizes(Path(fax.file))) == 1
        nothing_left_behind(pbx)
        assert fax_stats(pbx.instance)["Spandsp T.38"]["Success"] == 1
        assert await pbx.controller.import_pbx_record() == 0  # a restart imports nothing twice
        assert len(fax_attempts(pbx)) == 1


async def test_a_fax_cut_off_after_its_first_page_keeps_that_page(tmp_path: Path) -> None:
    async with faxing(tmp_path, "fx-cut") as (pbx, sender):
        document = sender.document("cut", fax_tiff((letter(STANDARD, 8), letter(STANDARD, 9))))
        sending = asyncio.create_task(sender.send(FAX_NUMBER, document, within=120))
        await asyncio.to_thread(wait_for_pages, spool_of(pbx.instance), 1, 90)
        await asyncio.to_thread(sender.hang_up)  # the sending machine's line drops
        sent = await sending
        assert sent.status == "FAILED", sent
        # The h extension told the controller, although ReceiveFax never finished.
        row = await call_over(pbx, "backline-fax")
        (fax,) = fax_attempts(pbx)
        assert (fax.key, fax.outcome) == (f"fax:{row.uniqueid}", Outcome.RECEIVED)
        assert "1 page" in fax.detail and "the transmission failed" in fax.detail, fax.detail
        print(f"cut off after {sent.seconds:.1f} s: {fax.detail}")
        assert len(page_sizes(Path(fax.file))) == 1
        nothing_left_behind(pbx)


async def test_a_fax_to_a_voice_only_number_is_heard_and_refused(tmp_path: Path) -> None:
    async with faxing(tmp_path, "fx-voice") as (pbx, sender):
        document = sender.document("novoice", fax_tiff((letter(STANDARD, 5),)))
        sent = await sender.send(VOICE_ONLY, document, within=60)
        # Answered as voice (voicemail: no desk phone is registered), heard as a fax by its
        # calling tone, refused: SendFax fails instead of faxing into a voicemail box.
        assert sent.answered and sent.status == "FAILED", sent
        row = await call_over(pbx, REJECT_CONTEXT)
        (fax,) = fax_attempts(pbx)
        assert (fax.key, fax.recipient, fax.outcome) == (
            f"fax:{row.uniqueid}", VOICE_ONLY, Outcome.REJECTED)
        assert "not-a-fax-number" in fax.detail
        call = pbx.controller.journal.attempt(f"call:{row.uniqueid}")
        assert call is not None and call.outcome is Outcome.VOICEMAIL  # what it was first
        assert list(spool_of(pbx.instance).glob("fax-*")) == []
        assert await pbx.controller.import_pbx_record() == 0
        print(f"refused on a voice-only number after {sent.seconds:.1f} s")


@pytest.mark.parametrize("broken", ["unwritable", "full"])
async def test_a_fax_that_cannot_be_stored_is_refused_before_it_is_answered(
        tmp_path: Path, broken: str) -> None:
    async with faxing(tmp_path, f"fx-{broken}") as (pbx, sender):
        faxes = pbx.controller.faxes
        if broken == "unwritable":
            faxes.store.parent.mkdir(parents=True, exist_ok=True)
            faxes.store.write_text("a file where the fax directory should be\n")
        else:
            faxes.min_free = 1 << 62  # more than any disk has: the directory counts as full
        document = sender.document("nostore", fax_tiff((letter(STANDARD, 6),)))
        sent = await sender.send(FAX_NUMBER, document, within=60)
        assert sent.answered and sent.status == "FAILED", sent
        row = await call_over(pbx, REJECT_CONTEXT)
        (fax,) = fax_attempts(pbx)
        assert (fax.key, fax.recipient, fax.outcome) == (
            f"fax:{row.uniqueid}", FAX_NUMBER, Outcome.REJECTED)
        why = {"unwritable": "not writable", "full": "full"}[broken]
        assert "no-storage" in fax.detail and why in fax.detail, fax.detail
        assert list(spool_of(pbx.instance).glob("fax-*")) == []  # never received at all
        print(f"refused ({broken} storage) after {sent.seconds:.1f} s")
