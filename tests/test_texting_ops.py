"""What ops see of staff texts (issue 20, part 2): who asked for each one in the audit log,
and `backline text list`.  The controller as `backline run` wires it, over a real SQLite
journal, against the Twilio-format stand-in; the CLI as its own process."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

from backline.app.commands.shared import who
from tests.test_texting import MAIN, PATIENT, ROOT, TEXT, Clinic
from tests.test_texting_send_time import clinic

__all__ = ["clinic"]  # the fixture


def backline(clinic: Clinic, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args, "--config",
                           str(clinic.config)], input=stdin, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


async def test_each_text_is_audited_with_who_asked_for_it_beside_the_user_it_names(
        clinic: Clinic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = "api: the connections.status token, from 127.0.0.1"
    assert (await clinic.text("w-1", "ana", MAIN, PATIENT))[0] == 202
    assert (await clinic.text("w-2", "sam", MAIN, PATIENT))[0] == 403
    done = await asyncio.to_thread(backline, clinic, "text", "send", MAIN, PATIENT, "--as",
                                   "jo", "--key", "w-3", stdin=TEXT)
    assert done.returncode == 0, done.stderr
    cli = f"cli: login {who(None)}"
    audit = [(e.actor, e.action, e.detail) for e in reversed(clinic.journal.audit_log())
             if e.action.startswith("text.")]
    assert audit == [
        ("ana", "text.send", f"ana texted from {MAIN} to …41 (via {api})"),
        ("sam", "text.refused", f"not-a-member: sam is not a member of {MAIN} and was not "
         f"added to this conversation (via {api})"),
        ("jo", "text.send", f"jo texted from {MAIN} to …41 (via {cli})")]
    assert f"staff text #1 by ana from {MAIN} to …41: to be sent (via {api})" in caplog.text
    assert f"staff text by sam refused: sam is not a member of {MAIN} and was not added to " \
        f"this conversation (via {api})" in caplog.text
    assert "lisinopril" not in caplog.text and PATIENT not in caplog.text
