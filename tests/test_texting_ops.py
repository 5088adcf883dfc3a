"""What ops see of staff texts (issue 20, part 2): who asked for each one in the audit log,
and `backline text list`.  The controller as `backline run` wires it, over a real SQLite
journal, against the Twilio-format stand-in; the CLI as its own process."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import pytest

from backline.app.commands.shared import who
from tests.test_texting import MAIN, OTHER, PATIENT, ROOT, TEXT, Clinic
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


async def test_backline_text_list_shows_recent_texts_without_the_text_or_the_partys_number(
        clinic: Clinic) -> None:
    assert (await clinic.text("list-1", "ana", MAIN, PATIENT))[0] == 202
    await clinic.settle()
    [message] = clinic.gateway.sent
    assert (await clinic.gateway.report_status(message, "delivered")).status == 200
    clinic.clock.advance(60)
    clinic.gateway.fail_next(1, 503)
    assert (await clinic.text("list-2", "jo", MAIN, OTHER))[0] == 202
    await clinic.settle()
    assert (await clinic.text("list-3", "sam", MAIN, PATIENT))[0] == 403  # never journaled

    listed = await asyncio.to_thread(backline, clinic, "text", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["when", "key", "user", "number", "to", "state"]
    assert [line.split() for line in lines[1:]] == [  # oldest first, at the practice's time
        ["2025-03-03", "08:00:00", "list-1", "ana", MAIN, "…41", "sent", "(delivered)"],
        ["2025-03-03", "08:01:00", "list-2", "jo", MAIN, "…99", "failed"]]

    as_json = await asyncio.to_thread(backline, clinic, "text", "list", "--json", "--since",
                                      "2025-03-03T14:00:30")
    assert as_json.returncode == 0, as_json.stderr
    [row] = json.loads(as_json.stdout)
    assert (row["key"], row["user"], row["number"], row["to"], row["state"], row["detail"],
            row["tries"], row["at"], row["sent_at"]) == (
        "list-2", "jo", MAIN, "…99", "failed", "HTTP 503", 1, "2025-03-03T14:01:00+00:00",
        None)
    none = await asyncio.to_thread(backline, clinic, "text", "list", "--since",
                                   "2025-03-03T15:00")
    assert (none.returncode, none.stdout) == (0, "no staff texts since 2025-03-03 09:00:00\n")
    bad = await asyncio.to_thread(backline, clinic, "text", "list", "--since", "soon")
    assert bad.returncode == 2 and "--since 'soon'" in bad.stderr

    shown = listed.stdout + as_json.stdout
    assert "lisinopril" not in shown and PATIENT not in shown and OTHER not in shown


async def test_a_body_too_large_or_not_a_json_object_is_refused_and_nothing_is_sent(
        clinic: Clinic) -> None:
    # The texting API and the conversation API read bodies the same way (backline/features/
    # json_requests.py): bounded before and after reading, an object or nothing.
    import aiohttp

    from backline.features.conversations import MAX_BODY
    from backline.features.texting.api import MAX_REQUEST

    async def post(path: str, data: bytes) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{clinic.status_port}{path}", data=data,
                headers={"Authorization": f"Bearer {clinic.token}",
                         "Content-Type": "application/json"}) as r:
            return r.status, await r.text()

    for path, limit in (("/texts/send", MAX_REQUEST), ("/conversations/add", MAX_BODY)):
        assert (await post(path, b"{" + b" " * limit + b"}"))[0] == 413, path
        assert (await post(path, b"[1, 2]"))[0] == 400, path
        assert (await post(path, b"{not json"))[0] == 400, path
        status, answer = await post(path, b"{}")
        assert status == 400 and json.loads(answer)["refused"].startswith("expected strings")
    await clinic.settle()
    assert clinic.gateway.sent == []
