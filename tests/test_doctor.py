"""``backline doctor``: each check tried for real, one line each with its verdict and fix.

The local checks against a real SQLite journal and real files; the PBX checks against the
real Asterisk (AMI login, the modules Backline needs, a SIPp desk phone registered).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backline.journal import open_journal
from tests.harness.practice_pbx import AMI_ENV, practice_pbx
from tests.harness.sipp import register

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
practice: {{name: Maple, timezone: America/Chicago}}
connections:
  storage: {{url: "sqlite://{journal}"}}
  status: {{listen: "127.0.0.1:8089", token_file: {token}}}
"""


def doctor(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", "doctor", str(config),
                           *extra], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_an_open_journal_and_secret_fail_with_the_fix_and_pass_once_fixed(
        tmp_path: Path) -> None:
    journal = tmp_path / "var" / "journal.db"
    open_journal(f"sqlite://{journal}").close()
    token = tmp_path / "status-token"
    token.write_text("s3cret\n")
    os.chmod(token, 0o644)
    os.chmod(journal, 0o644)
    config = tmp_path / "p.yaml"
    config.write_text(CONFIG.format(journal=journal, token=token))

    found = doctor(config)
    assert found.returncode == 1, found
    lines = found.stdout.splitlines()
    assert any(line.startswith("FAIL") and "journal modes" in line
               and f"{journal} is mode 0644" in line
               and f"fix: chmod go-rwx {journal}" in line for line in lines), lines
    assert any(line.startswith("FAIL") and f"secret {token}" in line
               and f"fix: chmod 600 {token}" in line for line in lines), lines
    assert any(line.startswith("ok") and "journal writable" in line for line in lines), lines
    assert "s3cret" not in found.stdout + found.stderr
    rows = json.loads(doctor(config, "--json").stdout)
    assert {r["check"]: r["verdict"] for r in rows}[f"secret {token}"] == "FAIL"
    assert all(set(r) == {"check", "verdict", "seen", "fix"} for r in rows)

    os.chmod(token, 0o600)
    os.chmod(journal, 0o600)
    fixed = doctor(config)
    assert fixed.returncode == 0, fixed
    assert not any(line.startswith("FAIL") for line in fixed.stdout.splitlines()), fixed.stdout
    assert f"secret {token}" in fixed.stdout


@pytest.mark.asterisk
async def test_on_asterisk_the_ami_login_modules_and_registered_desk_phones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with practice_pbx(tmp_path, "doctor", controller_in_process=False) as pbx:
        before = await asyncio.to_thread(doctor, pbx.config_path)
        await asyncio.to_thread(register, ("127.0.0.1", pbx.ports.sip), tmp_path, "ana-desk",
                                pbx.secret("ana-desk"), contact_port=5999, aor="ana")
        after = await asyncio.to_thread(doctor, pbx.config_path, "--json")
        monkeypatch.setenv("BACKLINE_DOCTOR_WRONG", "not-the-secret")
        wrong = pbx.config_path.with_name("wrong.yaml")
        text = pbx.config_path.read_text()
        assert f"secret_env: {AMI_ENV}" in text
        wrong.write_text(text.replace(f"secret_env: {AMI_ENV}",
                                      "secret_env: BACKLINE_DOCTOR_WRONG"))
        refused = await asyncio.to_thread(doctor, wrong)
        # A module Backline needs, unloaded (the echo test no call of this test uses).
        await asyncio.to_thread(pbx.instance.cli, "module unload app_echo")
        unloaded = await asyncio.to_thread(doctor, pbx.config_path)
        await asyncio.to_thread(pbx.instance.cli, "module load app_echo")
    assert before.returncode == 0, before  # unregistered phones warn, they do not fail
    lines = before.stdout.splitlines()
    assert any(line.startswith("ok") and "AMI login" in line for line in lines), lines
    assert any(line.startswith("ok") and "modules" in line for line in lines), lines
    assert any(line.startswith("warn") and "desk phones" in line and "ana-desk" in line
               and "fix:" in line for line in lines), lines
    rows = {r["check"]: r for r in json.loads(after.stdout)}
    assert "ana-desk" not in rows["desk phones"]["seen"].partition("not:")[2], rows
    assert unloaded.returncode == 1, unloaded
    assert any(line.startswith("FAIL") and "modules" in line and "app_echo" in line
               and "fix:" in line for line in unloaded.stdout.splitlines()), unloaded.stdout
    assert refused.returncode == 1, refused
    assert any(line.startswith("FAIL") and "AMI login" in line and "fix:" in line
               for line in refused.stdout.splitlines()), refused.stdout
