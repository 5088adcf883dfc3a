"""Restart after a crash, on the real Asterisk: `backline up` and `backline run` SIGKILLed
while the PBX goes on alone, then started again as ops would.

- `run` after a killed `up` asks Asterisk where its call record and fax spool are (inside the
  root `up` runs it in) and imports the calls and the fax it took alone; the fax is converted.
- `up` again adopts its own Asterisk (no second one), says how to reach its console, and its
  Ctrl-C stops it; a second `up` beside a live one is refused; `up` never says `ready` when
  Asterisk could not bind its SIP port.
- A fax whose storage failed during the call (the sender saw success) waits in the spool, 0600,
  and is converted by the controller that returns once storage is back.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from backline.app import config
from backline.app.serve import instance_name
from backline.journal import Attempt, AttemptKind, Outcome, open_journal
from backline.localpbx.asterisk import local_instance
from backline.localpbx.instance import AsteriskInstance
from backline.localpbx.pbxroot import ensure_root
from tests.fax_samples import STANDARD, fax_tiff, letter
from tests.harness.backline_process import BacklineProcess as Backline
from tests.harness.fax_sender import FaxSender, spool_of, wait_for_cdr, wait_for_pages
from tests.harness.practice_pbx import (
    AMI_ENV,
    OUTAGE_PIN,
    PIN_ENV,
    PracticePorts,
    practice_pbx,
    write_practice,
)
from tests.harness.sipp import place_calls

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parent.parent
FAX_NUMBER = "+13125550109"
DIRECT = "+13125550101"


def backline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def exists(path: str | Path) -> bool:
    return Path(path).exists()


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextmanager
def up_practice(tmp: Path) -> Iterator[tuple[Path, PracticePorts, AsteriskInstance]]:
    """A practice config as `backline up` is given it (no cdr_file: Asterisk is asked), and
    the instance `up` runs for it, stopped and removed at the end whatever the test did."""
    with pytest.MonkeyPatch.context() as env:  # the variables are restored at the end
        if AMI_ENV not in os.environ:
            env.setenv(AMI_ENV, "test-" + os.urandom(9).hex())
        env.setenv(PIN_ENV, OUTAGE_PIN)
        ports = PracticePorts.free()
        path = write_practice(tmp, ports, 5, None)
        directory = config.load(path).directory
        instance = local_instance(directory, instance_name(directory), root=ensure_root())
        try:
            yield path, ports, instance
        finally:
            pid = instance.find_running()
            if pid is not None:
                instance.adopt(pid)
                instance.kill()
            instance.remove()


@asynccontextmanager
async def sender_for(ports: PracticePorts, root: Path, name: str) -> AsyncIterator[FaxSender]:
    sender = FaxSender(f"fs-{name}-{os.urandom(3).hex()}", sip_port=ports.trunk,
                       practice_sip=ports.sip, root=root)
    try:
        await sender.start()
        yield sender
    finally:
        await sender.stop()


def attempts_to(path: Path, recipient: str) -> list[Attempt]:
    journal = open_journal(f"sqlite://{path.parent / 'journal.db'}")
    try:
        return [a for a in journal.attempts(limit=100) if a.recipient == recipient]
    finally:
        journal.close()


async def test_up_killed_then_run_imports_what_the_pbx_took_alone_and_up_adopts_it(
        tmp_path: Path) -> None:
    with up_practice(tmp_path) as (cfg, ports, instance):
        up = Backline("up", str(cfg))
        try:
            ready = up.wait_for("ready", 90)
            assert f"backline console --config {cfg}" in ready, ready
            pid = instance.find_running()
            assert pid is not None
            # A second `up` for the same config is refused, and leaves the first alone.
            second = backline("up", str(cfg))
            assert second.returncode == 1 and "another `backline up`" in second.stderr, second
            assert not any(line.startswith("ready") for line in second.stdout.splitlines())
            assert instance.find_running() == pid
            # Up to 30 s for `up` to confirm the PBX has it (the default 5 s a loaded
            # machine can miss); it returns as soon as it is confirmed.
            engaged = backline("outage", "engage", "--reason", "drill", "--wait", "30",
                               "--config", str(cfg))
            assert engaged.returncode == 0, engaged.stderr
            up.wait_for("mode is now outage", 30)
            up.signal(signal.SIGKILL)  # no goodbye: Asterisk goes on alone
            assert alive(pid)

            # Alone: a caller hears the announcement, a fax is received into the spool.
            call = place_calls(("127.0.0.1", ports.sip), tmp_path, DIRECT, from_user="carrier",
                               calls=1, timeout=60)
            async with sender_for(ports, instance.root, "alone") as sender:
                sent = await sender.send(FAX_NUMBER, sender.document(
                    "alone", fax_tiff((letter(STANDARD, 4),))), within=120)
            assert (sent.status, sent.pages) == ("SUCCESS", 1), sent
            assert (await asyncio.to_thread(call.wait, 60)).ok, call.describe()
            cdr = instance.host_path(instance.dir("log") / "cdr-csv" / "Master.csv")
            row = await asyncio.to_thread(wait_for_cdr, cdr,
                                          lambda r: r.context == "backline-fax", 30)
            spooled = spool_of(instance) / f"fax-{row.uniqueid}.tif"
            assert mode_of(spooled) == 0o600  # the sender's fax: patient data

            # `run`, as the README says, against the Asterisk `up` left behind.
            run = Backline("run", str(cfg))
            try:
                run.wait_for("ready", 60)
                run.wait_for("2 call(s) answered by the PBX", 60)
            finally:
                run.signal(signal.SIGTERM)
            (answered,) = attempts_to(cfg, DIRECT)
            assert answered.outcome is Outcome.ANNOUNCED
            (fax,) = attempts_to(cfg, FAX_NUMBER)
            assert (fax.kind, fax.key, fax.outcome) == (
                AttemptKind.FAX, f"fax:{row.uniqueid}", Outcome.RECEIVED), fax
            assert Path(fax.file).parent == tmp_path / "fax" and exists(fax.file)
            assert not exists(spooled)

            # `up` again: the same Asterisk, adopted; its console; Ctrl-C stops it.
            up = Backline("up", str(cfg))
            up.wait_for("adopted", 60)
            ready = up.wait_for("ready", 60)
            assert instance.find_running() == pid
            shown = backline("console", "-x", "core show version", "--config", str(cfg))
            assert shown.returncode == 0 and shown.stdout.startswith("Asterisk 22"), shown
            up.signal(signal.SIGINT)
            assert up.proc.returncode == 0
            assert not alive(pid) and instance.find_running() is None
            gone = backline("console", "-x", "core show version", "--config", str(cfg))
            assert gone.returncode == 1 and "no Asterisk started by `backline up`" in gone.stderr
        finally:
            up.signal(signal.SIGKILL)


async def test_up_never_says_ready_when_asterisk_could_not_bind_its_sip_port(
        tmp_path: Path) -> None:
    with up_practice(tmp_path) as (cfg, ports, instance):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
            squatter.bind(("127.0.0.1", ports.sip))  # another SIP server on this host
            up = Backline("up", str(cfg))
            try:
                out = await asyncio.to_thread(up.finish, 90)
            finally:
                up.signal(signal.SIGKILL)
        assert up.proc.returncode == 1, out
        assert not any(line.startswith("ready") for line in out.splitlines()), out
        assert f"did not bind SIP on 127.0.0.1:{ports.sip}" in out, out
        assert f"(pid {os.getpid()})" in out, out  # who holds it: this test's socket
        assert instance.find_running() is None  # the Asterisk it started is stopped


async def test_a_fax_whose_storage_failed_mid_call_is_converted_by_the_next_controller(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "cr-store", controller_in_process=False) as pbx, \
            sender_for(pbx.ports, pbx.instance.root, "store") as sender:
        store = tmp_path / "fax"
        run = Backline("run", str(pbx.config_path))
        try:
            run.wait_for("ready", 60)
            document = sender.document("two", fax_tiff((letter(STANDARD, 1),
                                                        letter(STANDARD, 2))))
            sending = asyncio.create_task(sender.send(FAX_NUMBER, document, within=150))
            spool = spool_of(pbx.instance)
            await asyncio.to_thread(wait_for_pages, spool, 1, 90)
            store.rename(tmp_path / "fax-disk")  # the fax disk goes away during the call
            store.write_text("not mounted\n")
            sent = await sending
            assert (sent.status, sent.pages) == ("SUCCESS", 2), sent  # the sender saw success
            run.wait_for("NotStored", 30)
            (fax,) = attempts_to(pbx.config_path, FAX_NUMBER)
            assert fax.outcome is Outcome.UNREADABLE and Path(fax.file).parent == spool, fax
            spooled = Path(fax.file)
            assert mode_of(spooled) == 0o600
            run.signal(signal.SIGKILL)
            store.unlink()
            (tmp_path / "fax-disk").rename(store)  # storage is back
            run = Backline("run", str(pbx.config_path))
            run.wait_for("ready", 60)
            run.wait_for("left in the PBX's spool is now taken in", 30)
        finally:
            run.signal(signal.SIGTERM)
        (fax,) = attempts_to(pbx.config_path, FAX_NUMBER)
        assert fax.outcome is Outcome.RECEIVED and "2 pages" in fax.detail, fax
        assert Path(fax.file).parent == store and exists(fax.file)
        assert not exists(spooled)


async def test_run_says_loudly_at_start_when_the_call_record_cannot_be_found(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "cr-nocdr", controller_in_process=False) as pbx:
        # cdr_csv does not make its directory: without it Asterisk records no call at all.
        cdr_dir = pbx.instance.host_path(pbx.instance.dir("log") / "cdr-csv")
        await asyncio.to_thread(shutil.rmtree, cdr_dir)
        run = Backline("run", str(pbx.config_path))
        try:
            run.wait_for("ready", 60)
            line = run.wait_for("call record", 60)
        finally:
            run.signal(signal.SIGTERM)
        assert " ERROR " in line and f"{cdr_dir}/Master.csv cannot be found" in line, line
        assert "cannot be imported" in line


async def test_a_second_run_on_the_same_config_says_which_is_running_and_starts_nothing(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "cr-twice", controller_in_process=False) as pbx:
        run = Backline("run", str(pbx.config_path))
        try:
            run.wait_for("ready", 60)
            second = await asyncio.to_thread(backline, "run", str(pbx.config_path))
            assert run.proc.poll() is None  # the first serves on
        finally:
            run.signal(signal.SIGTERM)
    assert second.returncode == 2, second
    assert "Traceback" not in second.stderr, second.stderr
    # Which one: the first controller's pid and command line (the config it runs).
    # One line says so, and no log line follows: nothing started (the rest is `check`'s
    # warnings about the config, printed as it is read).
    (line,) = [ln for ln in second.stderr.splitlines() if "warning:" not in ln]
    assert f"FastAGI address 127.0.0.1:{pbx.ports.agi} is already in use" in line, line
    assert f"pid {run.proc.pid} (" in line and str(pbx.config_path) in line, line
    assert "already running" in line and "nothing was started" in line, line
    assert not second.stdout
