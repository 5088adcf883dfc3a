"""The command line as ops use it: real subprocesses, exit codes, stderr, JSON for scripts."""

from __future__ import annotations

import getpass
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from backline.core.outage import Mode
from backline.journal import AttemptKind, Delivery, NewAttempt, Outcome, open_journal

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def practice_config(tmp_path: Path) -> Path:
    text = (ROOT / "config" / "example.yaml").read_text()
    path = tmp_path / "practice.yaml"
    path.write_text(text.replace("sqlite:///var/lib/backline/journal.db",
                                 f"sqlite://{tmp_path}/journal.db"))
    return path


def backline(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BACKLINE_CONFIG"}
    if config is not None:
        env["BACKLINE_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)


@pytest.mark.parametrize("command", [[], ["check"], ["run"], ["up"], ["outage"],
                                     ["outage", "engage"], ["outage", "end"],
                                     ["outage", "status"], ["attempts"], ["console"],
                                     ["hours"], ["hours", "status"], ["hours", "closed"],
                                     ["doctor"], ["reload"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = backline(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: backline")
    assert len(result.stdout.splitlines()) > 3


def test_outage_engage_status_end(practice_config: Path) -> None:
    engaged = backline("outage", "engage", "--reason", "carrier down", "--by", "ops",
                       config=practice_config)
    assert engaged.returncode == 0, engaged.stderr
    assert "outage engaged" in engaged.stdout
    status = backline("outage", "status", "--json", config=practice_config)
    data = json.loads(status.stdout)
    assert data["engaged"] is True and data["by"] == "ops" and data["via"] == "cli"
    assert data["reason"] == "carrier down"
    assert datetime.fromisoformat(data["since"]) <= datetime.now(UTC)
    text = backline("outage", "status", config=practice_config).stdout
    assert text.startswith("outage ENGAGED since") and "by ops" in text
    again = backline("outage", "engage", "--reason", "x", config=practice_config)
    assert again.returncode == 0 and "already outage" in again.stderr
    ended = backline("outage", "end", "--by", "ana", config=practice_config)
    assert ended.returncode == 0
    data = json.loads(backline("outage", "status", "--json", config=practice_config).stdout)
    assert data["mode"] == "normal" and data["by"] == "ana"
    assert [h["mode"] for h in data["history"]] == ["normal", "outage"]


def test_engage_and_end_say_plainly_when_no_controller_is_running(
        practice_config: Path) -> None:
    engaged = backline("outage", "engage", "--reason", "drill", config=practice_config)
    assert engaged.returncode == 0, engaged.stderr
    [line] = engaged.stdout.splitlines()
    assert line.startswith("outage engaged at ")
    assert "NOT in effect yet: no controller is running (none seen on this journal)" in line
    # "already" in the practice's local time, like every other time the CLI prints.
    since = datetime.fromisoformat(json.loads(backline(
        "outage", "status", "--json", config=practice_config).stdout)["since"])
    local = since.astimezone(ZoneInfo("America/Chicago")).strftime("%Y-%m-%d %H:%M:%S")
    again = backline("outage", "engage", "--reason", "x", config=practice_config)
    me = os.environ.get("SUDO_USER") or getpass.getuser()
    assert again.stderr == f"backline: already outage since {local} by {me}; nothing changed\n"
    ended = backline("outage", "end", "--no-wait", config=practice_config)
    assert ended.returncode == 0
    assert "NOT in effect yet: no controller is running" in ended.stdout


async def test_each_feature_a_missing_secret_turns_off_is_warned_of_once_at_start(
        practice_config: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from backline.app import config
    from backline.app.controller import Controller

    for name in ("BACKLINE_SMS_TOKEN", "BACKLINE_SMS_SIGNING_SECRET", "BACKLINE_INBOX_TOKEN",
                 "BACKLINE_OUTAGE_PIN"):
        monkeypatch.delenv(name, raising=False)
    directory = config.load(practice_config).directory
    journal = open_journal(directory.connections.storage.url)
    controller = Controller(directory, journal)
    caplog.set_level(logging.WARNING, logger="backline.controller")
    try:
        await controller.start()
    finally:
        await controller.close()
        journal.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "backline.controller"]
    for feature, variable in (("inbound SMS", "BACKLINE_SMS_SIGNING_SECRET"),
                              ("SMS sending", "BACKLINE_SMS_TOKEN"),
                              ("inbox delivery", "BACKLINE_INBOX_TOKEN"),
                              ("desk-phone outage switching (*28/*29)", "BACKLINE_OUTAGE_PIN")):
        lines = [w for w in warned if w.startswith(f"{feature} is off: ")]
        assert len(lines) == 1 and variable in lines[0], warned


def test_usage_and_config_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    missing = backline("outage", "status", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "no such config file" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("practice: {name: P}\nconnections: {storage: {url: 'sqlite:j.db'}}\nx: 1\n")
    result = backline("attempts", "--config", str(bad))
    assert result.returncode == 2
    assert f"{bad}:3: x: a known key" in result.stderr
    assert "Traceback" not in result.stderr
    wrong = backline("outage", "engage")
    assert wrong.returncode == 2 and "--reason" in wrong.stderr
    since = backline("attempts", "--since", "yesterday-ish", "--config",
                     str(ROOT / "config" / "example.yaml"))
    assert since.returncode == 2 and "--since" in since.stderr
    for far in ("1000000d", "99999999999999999999d"):
        too_far = backline("attempts", "--since", far, "--config",
                           str(ROOT / "config" / "example.yaml"))
        assert too_far.returncode == 2 and "--since" in too_far.stderr
        assert "Traceback" not in too_far.stderr


def test_a_command_for_the_local_asterisk_on_a_freeswitch_config_is_a_usage_error(
        practice_config: Path) -> None:
    text = practice_config.read_text()
    start, end = text.index("  pbx:\n"), text.index("  smtp:")
    practice_config.write_text(text[:start] + "  pbx:\n    kind: freeswitch\n    esl: {host: "
                               "127.0.0.1, port: 8021, password_env: BACKLINE_ESL_PASSWORD}\n"
                               + text[end:])
    up = backline("up", str(practice_config))
    assert up.returncode == 2 and "`backline up` starts Asterisk only" in up.stderr
    console = backline("console", "--config", str(practice_config))
    assert console.returncode == 2 and "needs an Asterisk PBX" in console.stderr
    assert "Traceback" not in up.stderr + console.stderr


def test_attempts_lists_recent_attempts(practice_config: Path, tmp_path: Path) -> None:
    journal = open_journal(f"sqlite://{tmp_path}/journal.db")
    journal.record_attempt(NewAttempt("c1", datetime.now(UTC), AttemptKind.CALL, Mode.OUTAGE,
                                      "+17205550141", "+13125550100", Outcome.ANNOUNCED,
                                      delivery=Delivery.HELD))
    journal.record_attempt(NewAttempt("s1", datetime.now(UTC), AttemptKind.SMS, Mode.OUTAGE,
                                      "Bob\x1b[2J", "+13125550102", Outcome.AUTO_REPLIED,
                                      text="refill", delivery=Delivery.HELD))
    journal.record_attempt(NewAttempt("c2", datetime.now(UTC), AttemptKind.CALL, Mode.NORMAL,
                                      "+17205550142", "+13125550100", Outcome.RANG,
                                      detail="answered by the PBX while the controller was away"))
    journal.record_attempt(NewAttempt("v1", datetime.now(UTC), AttemptKind.VOICEMAIL,
                                      Mode.NORMAL, "+17205550143", "+13125550100",
                                      Outcome.VOICEMAIL))
    journal.close()
    table = backline("attempts", "--since", "1h", config=practice_config)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    # Every row's columns under the header's, a voicemail's longer kind included.
    assert {line.index(" normal ") if " normal " in line else line.index(" outage ")
            for line in lines[1:]} == {lines[0].index(" mode ")}
    assert "call" in lines[1] and "announced" in lines[1] and "held" in lines[1]
    assert "\x1b" not in table.stdout  # an untrusted caller ID cannot drive the terminal
    rows = json.loads(backline("attempts", "--json", config=practice_config).stdout)
    assert [(r["kind"], r["to"], r["delivery"]) for r in rows] == [
        ("call", "+13125550100", "held"), ("sms", "+13125550102", "held"),
        ("call", "+13125550100", Delivery.NOT_NEEDED.value),
        ("voicemail", "+13125550100", Delivery.NOT_NEEDED.value)]
    assert rows[2]["detail"] == "answered by the PBX while the controller was away"


def test_journal_is_private_whatever_the_umask_and_check_warns_of_an_open_one(
        practice_config: Path, tmp_path: Path) -> None:
    # The controller as systemd starts it (umask 022), creating its journal and writing a
    # call: the directory, the database and its -wal and -shm hold caller numbers.
    journal = tmp_path / "var" / "backline" / "journal.db"
    practice_config.write_text(practice_config.read_text().replace(
        f"sqlite://{tmp_path}/journal.db", f"sqlite://{journal}"))
    writer = subprocess.Popen(
        [sys.executable, "-c", (
            "import os, sys\n"
            "os.umask(0o022)\n"
            "from datetime import UTC, datetime\n"
            "from backline.journal import AttemptKind, NewAttempt, Outcome, open_journal\n"
            "from backline.core.outage import Mode\n"
            f"j = open_journal('sqlite://{journal}')\n"
            "j.record_attempt(NewAttempt('c1', datetime.now(UTC), AttemptKind.CALL,\n"
            "    Mode.OUTAGE, '+17205550141', '+13125550100', Outcome.ANNOUNCED))\n"
            "print('written', flush=True)\n"
            "sys.stdin.read()\n"
            "j.close()\n")],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdin is not None
    try:
        assert writer.stdout.readline() == "written\n"
        modes = {p.name: p.stat().st_mode & 0o777
                 for p in [journal.parent, *journal.parent.iterdir()]}
    finally:
        writer.stdin.close()
        writer.wait(30)
    assert modes == {"backline": 0o700, "journal.db": 0o600, "journal.db-wal": 0o600,
                     "journal.db-shm": 0o600}
    clean = backline("check", str(practice_config))
    assert clean.returncode == 0 and "warning" not in clean.stdout, clean.stdout
    # A journal made readable by hand (or by an older release) is pointed out, not fixed.
    journal.chmod(0o644)
    warned = backline("check", str(practice_config))
    assert warned.returncode == 0
    assert f"{journal} is mode 0644, open to other local users" in warned.stdout
    assert "1 warning(s)" in warned.stdout
