"""What the rendered dialplan does with a decision on the real Asterisk: a decision that is
its action alone (an outage's announcement) is carried out from the step that reads it, and
one with fields is cut into its variables first (every step costs Asterisk a channel
snapshot, a CDR update and an AMI event: bench/outage.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from backline.core.outage import Mode
from backline.journal import Outcome
from tests.harness.practice_pbx import practice_pbx
from tests.harness.sipp import place_calls

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parent.parent
DIRECT = "+13125550101"


def steps_after_the_decision(events: list[dict[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Per channel, the dialplan steps (context, application) after its AGI step."""
    steps: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for e in events:
        if e.get("Event") == "Newexten":
            steps[e["Channel"]].append((e["Context"], e["Application"]))
    return {channel: seen[[app for _, app in seen].index("AGI") + 1:]
            for channel, seen in steps.items() if any(app == "AGI" for _, app in seen)}


async def test_an_outage_call_goes_from_its_decision_to_the_announcement_in_one_step(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "steps-outage") as pbx:
        engaged = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "backline.app.cli", "outage", "engage",
                             "--reason", "drill", "--config", str(pbx.config_path)],
            capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert engaged.returncode == 0, engaged.stdout + engaged.stderr
        await pbx.controller.wait_mode(Mode.OUTAGE, within=2.5)
        await pbx.controller.sync_once()
        callers = place_calls(("127.0.0.1", pbx.ports.sip), tmp_path, DIRECT,
                              from_user="carrier", calls=3, timeout=60)
        result = await asyncio.to_thread(callers.wait, 90)
        assert result.ok and result.successful == 3, callers.describe()
        after = steps_after_the_decision(pbx.events.seen)
        assert len(after) == 3, after
        # Answer and Playback come seconds before the PBX's BYE: seen by then.  No
        # backline-unpack step between the decision and the announcement.
        assert {tuple(seen[:3]) for seen in after.values()} == {(
            ("backline-carrier", "GotoIf"), ("backline-announce", "Answer"),
            ("backline-announce", "Playback"))}, after
        attempts = [a for a in pbx.controller.journal.attempts(limit=10)
                    if a.recipient == DIRECT]
        assert len(attempts) == 3 and {a.outcome for a in attempts} == {Outcome.ANNOUNCED}


async def test_a_decision_with_fields_is_unpacked_before_it_is_carried_out(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "steps-normal", ring_seconds=5) as pbx:
        # Normal mode, no desk phone registered: the number's voicemail (its box is a
        # field of the decision).
        callers = place_calls(("127.0.0.1", pbx.ports.sip), tmp_path, DIRECT,
                              from_user="carrier", calls=1, timeout=60)
        await pbx.events.wait_for(lambda e: e.get("Event") == "Newexten"
                                  and e.get("Application") == "VoiceMail", within=30)
        [after] = steps_after_the_decision(pbx.events.seen).values()
        assert after[:2] == [("backline-carrier", "GotoIf"), ("backline-carrier", "Gosub")]
        assert next(c for c, _ in after if c != "backline-carrier") == "backline-unpack"
        assert ("backline-voicemail", "VoiceMail") in after
        callers.kill()
