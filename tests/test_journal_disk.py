"""The journal's disk is shared by the least and the most important writes (issue 18, item 2).

`backline run` on the real Asterisk with its journal on a small tmpfs of its own: mail sent to
the intake in an outage fills held mail's budget and is then turned away (452), and so is
any mail once the disk is down to its free-space floor, while outage calls placed with SIPp
and signed SMS posted to the webhook still journal.  /metrics and the status page show the
free space, and warn before the floor.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest

from backline.core.outage import Mode
from backline.core.records import AttemptKind, Outcome
from tests.harness.alert_site import free_port
from tests.harness.backline_process import ControllerProcess
from tests.harness.practice_pbx import practice_pbx
from tests.harness.sipp import place_calls
from tests.harness.sms_gateway import ACCOUNT_SID, AUTH_TOKEN, TwilioGateway

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
DISK_MB, HELD_MB, FLOOR_MB = 64, 8, 6
DIRECT = "+13125550101"
PATIENT = "+17205550141"
TOKEN_ENV = "BACKLINE_TEST_SMS_TOKEN"


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MB of its own, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs",
                    str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def free(where: Path) -> int:
    stat = os.statvfs(where)
    return stat.f_bavail * stat.f_frsize


def fill_to(where: Path, left: int, name: str) -> None:
    """Writes a filler file that leaves about ``left`` bytes free."""
    with (where / name).open("ab") as f:
        f.write(b"\0" * max(0, free(where) - left))
        f.flush()
        os.fsync(f.fileno())


def send_mail(port: int, size: int) -> int:
    """One message of about ``size`` bytes, unauthenticated, as anyone on the internet may
    send; returns the intake's code (250 if it was kept)."""
    message = EmailMessage()
    message["From"] = "someone@elsewhere.example"
    message["To"] = "front@t.example"
    message["Subject"] = "a large attachment"
    message.set_content("x" * size)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            smtp.send_message(message)
        return 250
    except smtplib.SMTPSenderRefused as exc:
        return exc.smtp_code
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code


async def status_of(port: int) -> tuple[dict[str, object], str]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        async with http.get("/status.json") as response:
            doc = await response.json()
        async with http.get("/metrics") as response:
            metrics = await response.text()
    return dict(doc["health"]["journal_disk"]), metrics


def gauge(metrics: str, name: str) -> float:
    return float(next(line.split()[-1] for line in metrics.splitlines()
                      if line.startswith(name + " ")))


async def test_mail_fills_its_budget_and_the_floor_while_calls_and_sms_still_journal(
        tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, AUTH_TOKEN)
    pages, smtp_port, status = free_port(), free_port(), free_port()
    async with TwilioGateway() as gateway:
        extra = (f'  pages: {{listen: "127.0.0.1:{pages}", base_url: "http://127.0.0.1:{pages}"}}\n'
                 f'  status: {{listen: "127.0.0.1:{status}"}}\n'
                 f'  email_intake: {{listen: "127.0.0.1:{smtp_port}", domains: [t.example], '
                 f'held_mb: {HELD_MB}, free_floor_mb: {FLOOR_MB}}}\n'
                 f'  sms_gateway: {{url: "{gateway.base_url}", account: {ACCOUNT_SID}, '
                 f'token_env: {TOKEN_ENV}, signing_secret_env: {TOKEN_ENV}}}\n')
        async with practice_pbx(tmp_path, "disk", controller_in_process=False,
                                connections_extra=extra,
                                storage_url=f"sqlite://{small_disk / 'journal.db'}") as pbx:
            controller = ControllerProcess(pbx)
            try:
                engaged = await asyncio.to_thread(
                    subprocess.run, [sys.executable, "-m", "backline.app.cli", "outage",
                                     "engage", "--reason", "drill", "--no-wait",
                                     "--config", str(pbx.config_path)],
                    capture_output=True, text=True, cwd=ROOT, timeout=60)
                assert engaged.returncode == 0, engaged.stdout + engaged.stderr
                controller.wait_for("mode is now outage", 30)
                health, metrics = await status_of(status)
                assert health["verdict"] == "ok", health
                assert gauge(metrics, "backline_journal_free_floor_bytes") == FLOOR_MB * MB

                # Mail of 3 MB a message: kept until held mail's budget is reached, then
                # turned away with 452, the disk far from full.
                codes = [await asyncio.to_thread(send_mail, smtp_port, 3 * MB)
                         for _ in range(6)]
                kept = codes.count(250)
                assert 1 <= kept < 6 and codes == [250] * kept + [452] * (6 - kept), codes
                held = pbx.controller.journal.held_email_bytes()
                assert held <= HELD_MB * MB, held
                assert free(small_disk) > 2 * FLOOR_MB * MB
                controller.wait_for("mail turned away (452) 1 time(s): held mail is at its "
                                    "budget", 10)

                # Down to less than twice the floor: the page and /metrics warn.
                fill_to(small_disk, int(1.5 * FLOOR_MB * MB), "filler-1")
                health, metrics = await status_of(status)
                assert health["verdict"] == "failing", health
                assert f"below {FLOOR_MB} MB the email intake will turn mail away" in \
                    str(health["says"]), health
                assert gauge(metrics, "backline_journal_free_bytes") < 2 * FLOOR_MB * MB

                # Below the floor: every message is turned away, however small.
                fill_to(small_disk, FLOOR_MB * MB // 2, "filler-2")
                assert await asyncio.to_thread(send_mail, smtp_port, 100) == 452
                health, _ = await status_of(status)
                assert "the email intake is turning mail away (calls and SMS still journal)" \
                    in str(health["says"]), health

                # ...while outage calls and signed SMS still journal in what is left.
                callers = place_calls(("127.0.0.1", pbx.ports.sip), tmp_path, DIRECT,
                                      from_user="carrier", calls=20, timeout=60)
                texts = [await gateway.deliver(f"http://127.0.0.1:{pages}/sms/inbound",
                                               PATIENT, DIRECT, f"refill number {n}")
                         for n in range(5)]
                result = await asyncio.to_thread(callers.wait, 90)
                assert result.ok and result.successful == 20, callers.describe()
                assert [t.status for t in texts] == [200] * 5, controller.wait_for("sms webhook", 5)
                journal = pbx.controller.journal
                calls = [a for a in journal.attempts(limit=200)
                         if a.kind is AttemptKind.CALL and a.recipient == DIRECT]
                assert len(calls) == 20
                assert {(a.mode, a.outcome) for a in calls} == {(Mode.OUTAGE,
                                                                  Outcome.ANNOUNCED)}
                sms = [a for a in journal.attempts(limit=200) if a.kind is AttemptKind.SMS]
                assert sorted(a.text for a in sms) == [f"refill number {n}" for n in range(5)]
            finally:
                controller.stop()
