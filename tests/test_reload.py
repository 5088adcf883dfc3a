"""A live reload on the real Asterisk, with SIPp desk phones and a SIPp carrier: the owner of
a number changed and a user deactivated while a call is in progress; the next calls ring the
new members, the call in progress goes on; a broken YAML is refused and the old config keeps
running.  The reload is the one SIGHUP runs in `backline run`/`up` (backline/app/serve.py)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest

from backline.app.reload import RELOAD_WITHIN
from backline.app.serve import asterisk_reloader
from tests.harness.backline_process import BacklineProcess as Backline
from tests.harness.baresip import read_wav, write_wav
from tests.harness.practice_pbx import PracticePbx, practice_pbx
from tests.harness.sipp import (
    DeskPhoneMode,
    SippError,
    SippProcess,
    desk_phone,
    place_calls,
    register,
)
from tests.harness.tones import holds_sequence, tone_samples, tones_in
from tests.harness.transfer_phone import tone_file
from tests.harness.voicemail_caller import message_caller

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parent.parent

SCHED, DIRECT, MAIN = "+13125550102", "+13125550101", "+13125550100"
PHONES = {"ana-desk": "ana", "raj-desk": "raj", "sam-desk": "sam", "jo-desk": "jo",
          "mia-desk": "mia"}
TALK_MS = 10_000  # long enough that the first call is still up across the reload

OLD_SCHED = 'owner: "team:front-desk",\n     members: ["user:raj"], caller_id_name: Test Sched'
NEW_SCHED = 'owner: "user:mia", caller_id_name: Test Sched'
OLD_JO = 'extension: "112", desk_phones: [jo-desk]'
NEW_JO = 'extension: "112", active: false, desk_phones: [jo-desk]'


def dialled(p: PracticePbx, since: int) -> list[str]:
    """Desk phones Asterisk dialled after the first ``since`` DialBegin events."""
    return [e["DestChannel"].removeprefix("PJSIP/").rsplit("-", 1)[0]
            for e in p.events.named("DialBegin")[since:]]


def byes(phone: SippProcess, call_id: str, direction: str) -> int:
    """The BYEs of one dialog the phone sent or received (a phone that answered a ring-all
    call a moment after another phone did gets a BYE for that call: not this one's)."""
    return sum(1 for m in phone.messages() if m.direction == direction
               and m.method == "BYE" and m.header("Call-ID") == call_id)


async def test_an_owner_changed_and_a_user_deactivated_apply_live_without_dropping_a_call(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "reload", ring_seconds=8) as pbx:
        sip = ("127.0.0.1", pbx.ports.sip)
        phones = {}
        try:
            for phone, user in PHONES.items():
                phones[phone] = await asyncio.to_thread(
                    desk_phone, sip, tmp_path, phone, pbx.secret(phone),
                    DeskPhoneMode.ANSWER_AND_HANG_UP, talk_ms=TALK_MS, aor=user)
            await pbx.driver.wait_registered(set(PHONES.values()), within=30)
            reloader = asterisk_reloader(pbx.controller, pbx.driver, pbx.instance)

            # A call in progress: the doctor's line, answered by ana or mia.
            first = place_calls(sip, tmp_path, DIRECT, from_user="carrier", timeout=60)
            answered = await pbx.events.wait_for(
                lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER")
            talker = phones[answered["DestChannel"].removeprefix("PJSIP/").rsplit("-", 1)[0]]
            call_id = talker.invites()[0].header("Call-ID") or ""  # its first call is this
            assert call_id

            text = pbx.config_path.read_text()
            assert OLD_SCHED in text and OLD_JO in text
            pbx.config_path.write_text(text.replace(OLD_SCHED, NEW_SCHED).replace(OLD_JO,
                                                                                  NEW_JO))
            started = time.monotonic()
            result = await reloader.reload()
            took = time.monotonic() - started
            assert result.applied, result
            assert "pjsip.conf" in result.changed and "res_pjsip.so" in result.modules
            # The first call was up across the reload.
            assert byes(talker, call_id, "sent") == byes(talker, call_id, "received") == 0
            print(f"\nbench: reload in {took * 1000:.0f} ms ({', '.join(result.modules)}), "
                  "1 call in progress, 0 dropped")
            # jo's phone is no longer Asterisk's: its next REGISTER is refused.
            with pytest.raises(SippError) as unregistered:
                await asyncio.to_thread(register, sip, tmp_path, "jo-desk",
                                        pbx.secret("jo-desk"), contact_port=5999, aor="jo",
                                        timeout=30)  # ends at the refusal
            # Refused by the PBX (401/403/404 to the REGISTER), not merely unanswered.
            assert re.search(r"SIP/2\.0 40[134]", str(unregistered.value)), \
                str(unregistered.value)

            # The next call to the scheduling line rings its new owner only.
            seen = len(pbx.events.named("DialBegin"))
            second = place_calls(sip, tmp_path, SCHED, from_user="carrier", timeout=60)
            await pbx.events.wait_for(lambda e: e.get("Event") == "DialBegin"
                                      and len(pbx.events.named("DialBegin")) > seen)
            assert dialled(pbx, seen) == ["mia-desk"]
            assert (await asyncio.to_thread(second.wait, 60)).ok, second.describe()

            # The main line rings every active user's phone: jo's no longer.
            seen = len(pbx.events.named("DialBegin"))
            third = place_calls(sip, tmp_path, MAIN, from_user="carrier", timeout=60)
            assert (await asyncio.to_thread(third.wait, 60)).ok, third.describe()
            rang = set(dialled(pbx, seen))
            assert "jo-desk" not in rang and {"ana-desk", "raj-desk", "sam-desk"} <= rang, rang

            # A broken YAML is refused, says why, and the practice runs on as it was.
            good = pbx.config_path.read_text()
            pbx.config_path.write_text(good.replace(NEW_SCHED, 'owner: "user:nobody", '
                                                    "caller_id_name: Test Sched"))
            refused = await reloader.reload()
            assert not refused.applied and any("nobody" in p for p in refused.problems), \
                refused
            assert pbx.controller.book.sorted_members(SCHED) == ("mia",)
            seen = len(pbx.events.named("DialBegin"))
            fourth = place_calls(sip, tmp_path, SCHED, from_user="carrier", timeout=60)
            assert (await asyncio.to_thread(fourth.wait, 60)).ok, fourth.describe()
            assert dialled(pbx, seen) == ["mia-desk"]

            # The first call ended as its phone hung up, never dropped by the PBX.
            assert (await asyncio.to_thread(first.wait, 60)).ok, first.describe()
            assert byes(talker, call_id, "sent") == 1
            assert byes(talker, call_id, "received") == 0
            audited = [e.action for e in pbx.controller.journal.audit_log()]
            assert audited[:2] == ["config.reload.refused", "config.reload"]
        finally:
            for proc in phones.values():
                proc.kill()


async def test_a_module_reload_asterisk_does_not_confirm_says_so_and_the_next_reload_asks_again(
        tmp_path: Path) -> None:
    # An Asterisk that does not answer (stopped here: SIGSTOP, the way a loaded server's
    # answer never comes in time) hits the bound; the reload must say what did not happen,
    # keep the controller's practice, and not count the written files as Asterisk's: the
    # next reload used to find them unchanged and never ask for the module again.
    async with practice_pbx(tmp_path, "reload-frozen") as pbx:
        sip = ("127.0.0.1", pbx.ports.sip)
        reloader = asterisk_reloader(pbx.controller, pbx.driver, pbx.instance,
                                     reload_within=1.0)
        assert reloader.files is not None
        text = pbx.config_path.read_text()
        assert OLD_JO in text
        pbx.config_path.write_text(text.replace(OLD_JO, NEW_JO))
        pid = pbx.instance.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            unconfirmed = await reloader.reload()  # the peer never answers: the bound is hit
        finally:
            os.kill(pid, signal.SIGCONT)
        assert not unconfirmed.applied, unconfirmed
        [problem] = unconfirmed.problems
        assert re.search(r"Asterisk did not confirm the reload of \w+\.so within 1 s .*"
                         r"the next `backline reload` asks for it again", problem), problem
        assert "jo" in pbx.controller.book.sorted_members(MAIN)  # the old practice runs on

        reloader.files.reload_within = RELOAD_WITHIN
        again = await reloader.reload()
        assert again.applied, again
        assert "pjsip.conf" in again.changed and "res_pjsip.so" in again.modules, again
        assert "jo" not in pbx.controller.book.sorted_members(MAIN)
        with pytest.raises(SippError) as unregistered:
            await asyncio.to_thread(register, sip, tmp_path, "jo-desk", pbx.secret("jo-desk"),
                                    contact_port=5999, aor="jo", timeout=30)
        assert re.search(r"SIP/2\.0 40[134]", str(unregistered.value)), str(unregistered.value)


def backline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


async def test_backline_reload_applies_a_change_to_a_running_controller_and_refuses_a_broken_one(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "reload-cli", controller_in_process=False) as pbx:
        sip = ("127.0.0.1", pbx.ports.sip)
        cfg = str(pbx.config_path)
        none_yet = await asyncio.to_thread(backline, "reload", cfg)
        assert none_yet.returncode == 1 and "no controller is running" in none_yet.stderr
        run = Backline("run", cfg)
        phones = {}
        try:
            run.wait_for("ready", 60)
            for phone in ("mia-desk", "sam-desk", "raj-desk"):
                phones[phone] = await asyncio.to_thread(
                    desk_phone, sip, tmp_path, phone, pbx.secret(phone),
                    DeskPhoneMode.ANSWER_AND_HANG_UP, talk_ms=300, aor=PHONES[phone])
            text = pbx.config_path.read_text()
            pbx.config_path.write_text(text.replace(OLD_SCHED, NEW_SCHED))
            applied = await asyncio.to_thread(backline, "reload", cfg)
            assert applied.returncode == 0, applied
            assert f"reload (pid {run.proc.pid}): applied" in applied.stdout, applied.stdout
            assert "`backline render`" in applied.stdout  # run: the files are ops'
            run.wait_for("reload of", 60)
            call = place_calls(sip, tmp_path, SCHED, from_user="carrier", timeout=40)
            assert (await asyncio.to_thread(call.wait, 60)).ok, call.describe()
            assert [len(phones[p].invites()) for p in ("mia-desk", "sam-desk", "raj-desk")] \
                == [1, 0, 0]

            # A broken YAML: refused before the controller hears of it; nothing changes.
            pbx.config_path.write_text(text.replace(OLD_SCHED, 'owner: "user:nobody", '
                                                    "caller_id_name: Test Sched"))
            broken = await asyncio.to_thread(backline, "reload", cfg)
            assert broken.returncode == 2, broken
            assert "nobody" in broken.stderr and "not reloaded" in broken.stderr
            assert run.proc.poll() is None
            again = place_calls(sip, tmp_path, SCHED, from_user="carrier", timeout=40)
            assert (await asyncio.to_thread(again.wait, 60)).ok, again.describe()
            assert [len(phones[p].invites()) for p in ("mia-desk", "sam-desk", "raj-desk")] \
                == [2, 0, 0]
        finally:
            run.signal(signal.SIGTERM)
            for proc in phones.values():
                proc.kill()


GREETING_A = [400, 650, 900, 1150, 1400, 1650, 1900, 2150]
GREETING_B = [500, 750, 1000, 1250, 1500, 1750, 2000, 2250]


async def test_a_voicemail_greeting_changed_in_the_yaml_is_played_after_a_reload(
        tmp_path: Path) -> None:
    """A greeting is a sound clip the dialplan names by its box: no .conf file changes with
    its words, so a reload used to leave the old one playing."""
    for name, tones in (("greet-a.wav", GREETING_A), ("greet-b.wav", GREETING_B)):
        write_wav(tmp_path / name, tone_samples(tones) * 2)
    keys = f"voicemail_greeting: {{file: {tmp_path / 'greet-a.wav'}}}"
    async with practice_pbx(tmp_path, "reload-greeting", carrier_from_user=False,
                            number_keys={SCHED: keys}) as pbx:
        text = pbx.config_path.read_text()
        pbx.config_path.write_text(text.replace("greet-a.wav", "greet-b.wav"))
        result = await asterisk_reloader(pbx.controller, pbx.driver, pbx.instance).reload()
        assert result.applied, result

        # Nobody's phone is registered: the caller reaches the line's voicemail.
        caller = message_caller(("127.0.0.1", pbx.ports.sip), tmp_path, SCHED,
                                from_user="+17205550141", talk_ms=1000,
                                audio=tone_file(tmp_path / "tone.ulaw", seconds=2))
        try:
            played = await pbx.events.wait_for(
                lambda e: e.get("Application") == "Playback"
                and "/greeting-" in e.get("AppData", ""), within=30)
        finally:
            caller.kill()
        clip = pbx.instance.host_path(PurePosixPath(played["AppData"] + ".wav"))
        heard = tones_in(read_wav(clip), GREETING_A + GREETING_B)
        assert holds_sequence(heard, GREETING_B), heard
        assert not set(heard) & set(GREETING_A), heard
