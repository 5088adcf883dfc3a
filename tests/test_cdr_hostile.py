"""A carrier caller's ID is untrusted and lands in the PBX's own call record: on the real
Asterisk, calls the fail-safe answered while the controller was away, from callers whose
number and name hold quotes, commas and a line break, are each the call it was on its return,
and the calls after them are not lost.

What reaches Asterisk's CDR: res_pjsip.c, set_id_from_hdr, takes the From's (or
P-Asserted-Identity's) user part as pjsip's parser left it, URL-decoded (sip_parser.c,
int_parse_user_pass, so %22 %2C %0A arrive as a quote, a comma and a line break), cut at a
semicolon, and the display name between its quotes as sent (a quoted-pair keeps its
backslash).  The rendered carrier context keeps of the caller's number only + * # digits and
letters (backline.render.asterisk_dialplan: FILTER, before anything rings or records), and
cdr_csv.c, append_string, doubles a quote in every value (the name's, in clid) and escapes
nothing else.  So no caller shapes a row here, and this passed before the import was made
line-bounded (tests/test_cdr_import.py): it keeps that so."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from backline.core.connections import AsteriskPbx
from backline.journal import Outcome
from tests.harness.fax_sender import wait_for_cdr
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import place_calls

pytestmark = pytest.mark.asterisk

DIRECT = "+13125550101"
# The callers' numbers as Asterisk holds them, and the names they send beside them.
CALLERS = [('+17205550150"', 'Bob \\"Quote'),
           ('+17205550151"\n"1764900000.1","+17205550199', 'Row, \\"Forger\\"'),
           ("+1720,555\"0152", 'Ann, \\"A\\", Caller'),
           ("+17205550153", "Later Caller")]


def filtered(number: str) -> str:
    """The caller's number as the carrier context keeps it: FILTER(+*#0-9A-Za-z), 64 long."""
    return re.sub(r"[^+*#0-9A-Za-z]", "", number)[:64]


@pytest.fixture()
async def pbx(tmp_path: Path) -> AsyncIterator[PracticePbx]:
    """The carrier recognised by its address: its From carries the caller."""
    async with practice_pbx(tmp_path, "cdr-hostile", carrier_from_user=False) as p:
        yield p


async def test_caller_ids_with_quotes_commas_and_a_line_break_are_each_their_own_call(
        pbx: PracticePbx, tmp_path: Path) -> None:
    config = pbx.directory.connections.pbx
    assert isinstance(config, AsteriskPbx)
    await pbx.driver.stop()  # the controller is away: the PBX answers alone
    for number, name in CALLERS:
        caller = place_calls(("127.0.0.1", pbx.ports.sip), tmp_path, DIRECT,
                             from_user=quote(number, safe="+"), caller_name=name, timeout=60)
        assert (await asyncio.to_thread(caller.wait, 90)).ok, caller.describe()
    await asyncio.to_thread(wait_for_cdr, Path(config.cdr_file),
                            lambda r: r.caller == CALLERS[-1][0], 60)
    assert await pbx.controller.import_pbx_record() == len(CALLERS)
    attempts = pbx.controller.journal.attempts(limit=100)
    assert sorted((a.sender, a.recipient, a.outcome) for a in attempts) == sorted(
        (filtered(number), DIRECT, Outcome.ANNOUNCED) for number, _ in CALLERS)
    assert await pbx.controller.import_pbx_record() == 0
