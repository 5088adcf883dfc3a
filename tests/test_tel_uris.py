"""A carrier that names the practice's number in a tel: URI (RFC 3966), as some do: in the
Request-URI, or in To alone on a registered trunk (the Request-URI naming no user).  Either is
read like a sip: URI's user, on the real Asterisk (the dialplan of
backline/render/asterisk_dialplan.py); anything but + and digits is still no number of ours."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from backline.core.outage import Mode, Via
from backline.core.records import Outcome
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import place_calls

DIRECT = "+13125550101"  # Dr. Lee's line
UNKNOWN = "+13125559999"


async def call(p: PracticePbx, tmp: Path, number: str, tel: Literal["request", "to"],
               seen: set[str]) -> tuple[str, str, Outcome]:
    """A carrier call naming ``number`` as ``tel`` says: what was played, and the
    attempt the journal took (its recipient, its outcome); ``seen``: the attempts' keys
    so far."""
    caller = place_calls(("127.0.0.1", p.ports.sip), tmp / tel, number, from_user="carrier",
                         tel=tel, timeout=60)  # the whole announcement, on a loaded machine
    assert (await asyncio.to_thread(caller.wait, 90)).ok, caller.describe()
    journal = p.controller.journal
    await p.controller.wait_rounds(lambda: len(journal.attempts(limit=10)) > len(seen),
                                   within=30)
    (attempt,) = [a for a in journal.attempts(limit=10) if a.key not in seen]
    seen.add(attempt.key)
    played = [e for e in p.events.seen if e.get("Application") == "Playback"
              and e.get("Uniqueid") == attempt.key.removeprefix("call:")]
    return played[0]["AppData"] if played else "", attempt.recipient, attempt.outcome


async def test_a_did_in_a_tel_uri_is_read_from_the_request_uri_or_to(tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "t-tel-uri", ring_seconds=5) as p:
        # In an outage a call to one of our numbers hears the announcement; an unknown
        # number is refused (ss-noservice) either way.
        await p.controller.switch(Mode.OUTAGE, by="test", via=Via.CLI, reason="drill")
        seen: set[str] = set()
        for tel in ("request", "to"):
            played, recipient, outcome = await call(p, tmp_path, DIRECT, tel, seen)
            assert (recipient, outcome) == (DIRECT, Outcome.ANNOUNCED), tel
            assert played.endswith("announcement"), (tel, played)
            played, recipient, outcome = await call(p, tmp_path, UNKNOWN, tel, seen)
            assert (recipient, outcome, played) == (UNKNOWN, Outcome.REFUSED, "ss-noservice")
        # Visual separators (RFC 3966) in To's tel: URI are no part of the number.
        played, recipient, outcome = await call(p, tmp_path, "+1-312-555-0101", "to", seen)
        assert (recipient, outcome) == (DIRECT, Outcome.ANNOUNCED)
        # ... nor in the Request-URI's.
        played, recipient, outcome = await call(p, tmp_path, "+1-312-555-0101", "request", seen)
        assert (recipient, outcome) == (DIRECT, Outcome.ANNOUNCED)
        assert played.endswith("announcement"), played
