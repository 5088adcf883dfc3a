"""The command line as ops use it: real subprocesses, exit codes, stderr, JSON for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from telephony.journal import AttemptKind, Delivery, NewAttempt, Outcome, open_journal
from telephony.outage import Mode

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
    return subprocess.run([sys.executable, "-m", "telephony.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)


@pytest.mark.parametrize("command", [[], ["check"], ["run"], ["up"], ["outage"],
                                     ["outage", "engage"], ["outage", "end"],
                                     ["outage", "status"], ["attempts"]])
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


def test_attempts_lists_recent_attempts(practice_config: Path, tmp_path: Path) -> None:
    journal = open_journal(f"sqlite://{tmp_path}/journal.db")
    journal.record_attempt(NewAttempt("c1", datetime.now(UTC), AttemptKind.CALL, Mode.OUTAGE,
                                      "+17205550141", "+13125550100", Outcome.ANNOUNCED,
                                      delivery=Delivery.HELD))
    journal.record_attempt(NewAttempt("s1", datetime.now(UTC), AttemptKind.SMS, Mode.OUTAGE,
                                      "Bob\x1b[2J", "+13125550102", Outcome.AUTO_REPLIED,
                                      text="refill", delivery=Delivery.HELD))
    journal.close()
    table = backline("attempts", "--since", "1h", config=practice_config)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert "call" in lines[1] and "announced" in lines[1] and "held" in lines[1]
    assert "\x1b" not in table.stdout  # an untrusted caller ID cannot drive the terminal
    rows = json.loads(backline("attempts", "--json", config=practice_config).stdout)
    assert [(r["kind"], r["to"], r["delivery"]) for r in rows] == [
        ("call", "+13125550100", "held"), ("sms", "+13125550102", "held")]
