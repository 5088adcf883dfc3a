"""Outside parties in E.164: a caller ID a carrier sent as 10 national digits, or an SMS sender
a gateway sent as 11 bare digits, is the same party as that number in E.164 (one
conversation), in the journal, the inbox item and the link page, with what came kept beside it.
The call goes through the real Asterisk (live and, with the controller away, through the CDR
import); the SMS through the signed webhook, the alert email's link and a real inbox server."""

from __future__ import annotations

import asyncio
import select
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from backline.app.controller import Controller
from backline.core.e164 import OutsideNumber, outside
from backline.core.outage import Mode, Via
from backline.features.inbox.payload import item_document
from backline.features.links.page import render_alert_page
from backline.journal import AttemptKind, Delivery, Outcome
from backline.localpbx.inotify import DirectoryWatch
from tests.harness.alert_site import INBOX_TOKEN_ENV, PRACTICE_NUMBER, AlertSite
from tests.harness.inbox_server import InboxServer
from tests.harness.practice_pbx import practice_pbx
from tests.harness.sipp import place_calls
from tests.test_alerts import EMAILS, link_in

DIRECT = "+13125550101"
TOKEN = "inbox-token-for-the-outside-party-tests"


@pytest.mark.parametrize(("given", "number"), [
    ("7205550141", "+17205550141"),        # 10 national digits (NANP)
    ("17205550141", "+17205550141"),       # 11, with the country code
    ("+17205550141", "+17205550141"),
    ("(720) 555-0141", "+17205550141"),
    ("+442079460000", "+442079460000"),    # E.164 elsewhere stays
    ("anonymous", "anonymous"),            # not a number: kept as it came
    ("911", "911"),
    ("1205550141", "1205550141"),          # 10 digits, but no NANP area code
    ("27205550141", "27205550141"),        # 11 digits not starting with 1
    ("0117205550141", "0117205550141"),    # an international prefix: no plan resolves it
    ("", ""),
])
def test_outside_numbers_in_e164_where_the_numbering_plan_allows(given: str,
                                                                 number: str) -> None:
    assert outside(given) == OutsideNumber(number, given)


async def _import_when_written(controller: Controller, cdr_dir: Path) -> int:
    """Import the PBX's CDR, waiting for Asterisk to write the row of the call just ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    with DirectoryWatch(cdr_dir) as watch:
        while not (new := await controller.import_pbx_record()):
            remaining = deadline - loop.time()
            assert remaining > 0, "no CDR row within 15 s"
            await asyncio.to_thread(select.select, [watch.fileno()], [], [], remaining)
            watch.drain()
    return new


@pytest.mark.asterisk
async def test_a_10_digit_caller_id_is_one_e164_party_live_and_from_the_cdr(
        tmp_path: Path) -> None:
    # The carrier recognised by its address (as in config/example.yaml), so its From can
    # carry the caller's number, as a real carrier's does.
    async with practice_pbx(tmp_path, "e164-cid", controller_in_process=False,
                            carrier_from_user=False) as pbx:
        sip = ("127.0.0.1", pbx.ports.sip)
        controller = pbx.controller
        cdr = controller.cdr_path
        assert cdr is not None
        cdr.parent.mkdir(parents=True, exist_ok=True)
        # The controller away: Asterisk announces on its own, its CDR keeps the caller ID as
        # the carrier sent it, and the import journals the call.
        away = place_calls(sip, tmp_path, DIRECT, from_user="7205550141", timeout=30)
        assert (await asyncio.to_thread(away.wait, 45)).ok, away.describe()
        assert await _import_when_written(controller, cdr.parent) == 1
        # The controller back, in an outage: the same caller, decided live.
        await pbx.driver.start()
        await controller.switch(Mode.OUTAGE, by="ops", via=Via.CLI, reason="drill")
        live = place_calls(sip, tmp_path, DIRECT, from_user="7205550141", timeout=30)
        assert (await asyncio.to_thread(live.wait, 45)).ok, live.describe()
        journal = controller.journal
        calls = [a for a in journal.attempts() if a.recipient == DIRECT]
        assert len(calls) == 2
        assert {(a.sender, a.sender_raw) for a in calls} == {("+17205550141", "7205550141")}
        assert {(a.kind, a.outcome, a.delivery) for a in calls} == {
            (AttemptKind.CALL, Outcome.ANNOUNCED, Delivery.HELD)}
        # Re-importing the CDR (now holding both calls) records nothing twice.
        assert await controller.import_pbx_record() == 0
        # The inbox files both under one conversation, and the link page shows the E.164
        # number with what the carrier sent.
        journal.enqueue_held()
        items = journal.item_of_attempts([a.id for a in calls])
        docs = [item_document(items[a.id], controller.book, None) for a in calls]
        assert [d["conversation"] for d in docs] == [
            {"number": DIRECT, "party": "+17205550141"}] * 2
        assert {(d["from"], d["from_raw"]) for d in docs} == {("+17205550141", "7205550141")}
        page = render_alert_page("Test", "UTC", calls, datetime.now(UTC) + timedelta(hours=1),
                                 "")
        assert page.count("+17205550141 <span class=\"quiet\">(sent as 7205550141)") == 2


async def test_a_call_and_an_sms_from_one_patient_in_two_spellings_are_one_party(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INBOX_TOKEN_ENV, TOKEN)
    inbox = InboxServer(tmp_path / "inbox.db", token=TOKEN)
    await inbox.start()
    try:
        # Alerts by email only: the gateway then sends nothing but the automatic reply.
        async with AlertSite(tmp_path, kind="email", inbox_url=inbox.url) as site:
            assert site.controller is not None and site.journal is not None
            await site.engage()
            # A call whose carrier sent 10 national digits (through the door the FastAGI
            # driver uses), then a text from a gateway that sent 11 bare digits.
            await site.record(AttemptKind.CALL, "7735550188", PRACTICE_NUMBER)
            answer = await site.gateway.deliver(f"{site.base_url}/sms/inbound", "17735550188",
                                                PRACTICE_NUMBER, "refill please")
            assert answer.status == 200
            call, sms = site.journal.attempts()
            assert (call.kind, call.sender, call.sender_raw) == (
                AttemptKind.CALL, "+17735550188", "7735550188")
            assert (sms.kind, sms.sender, sms.sender_raw) == (
                AttemptKind.SMS, "+17735550188", "17735550188")
            # The automatic reply went to the number in E.164.
            [reply] = await site.gateway.wait_for_sent(1)
            assert reply.to == "+17735550188"
            # The alert's link page: both under the E.164 number, with what came.
            await site.notifier.settle()
            emails = await site.sink.wait_for(EMAILS)
            async with aiohttp.ClientSession() as http, http.get(link_in(emails[0])) as r:
                assert r.status == 200
                page = await r.text()
            if page.count("<section>") < 2:  # the text came after the at-once alert
                site.clock.advance(10)
                site.notifier.wake()
                emails = await site.sink.wait_for(2 * EMAILS)
                async with aiohttp.ClientSession() as http, \
                        http.get(link_in(emails[EMAILS])) as r:
                    page += await r.text()
            assert "+17735550188 <span class=\"quiet\">(sent as 7735550188)" in page
            assert "+17735550188 <span class=\"quiet\">(sent as 17735550188)" in page
            # The inbox, once the outage ends: one conversation for both.
            await site.controller.switch(Mode.NORMAL, by="ops", via=Via.CLI, reason="")
            assert site.controller.inbox is not None
            await site.controller.inbox.drained(within=30)
        docs = inbox.items()
        assert [d["kind"] for d in docs] == ["call", "sms"]
        assert [d["conversation"] for d in docs] == [
            {"number": PRACTICE_NUMBER, "party": "+17735550188"}] * 2
        assert [(d["from"], d["from_raw"]) for d in docs] == [
            ("+17735550188", "7735550188"), ("+17735550188", "17735550188")]
    finally:
        await inbox.stop()
