"""Backline as a service: installed as systemd would run it, and what systemd does to it.

- `backline install --root DIR` creates the user, the directories with their modes, the
  secrets' environment file and a hardened unit, enabled; `systemd-analyze verify` accepts the
  unit and `systemd-analyze security` rates it; `--dry-run` changes nothing; `uninstall` leaves
  the journal.  (systemd is not PID 1 in this container, so `systemd-run` cannot run it: the
  unit's own command lines are run directly instead.)
- The unit's ExecStart, run as it is with a notification socket, reaches ready and sends
  READY=1; its ExecReload applies a change and refuses a broken YAML (exit 2).
- A SIGHUP that comes while `backline up` is still starting (Asterisk booting, no controller
  yet) is held until the controller is ready and then reloads; it never ends the process.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backline.pbx.voicemail_desk import voicemail_store
from backline.render.systemd import unit_command
from tests.harness.backline_process import BacklineProcess as Backline
from tests.harness.practice_pbx import AMI_ENV, practice_pbx
from tests.test_crash_restart import up_practice
from tests.test_reload import NEW_SCHED, OLD_SCHED

ROOT = Path(__file__).resolve().parent.parent
HELD = "SIGHUP before the controller is ready"
EXAMPLE = ROOT / "config" / "example.yaml"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
UNIT = "etc/systemd/system/backline.service"


def backline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backline.app.cli", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def seeded_root(folder: Path) -> Path:
    """An empty system root with only root's account, for `install --root`."""
    (folder / "etc").mkdir(parents=True)
    for name, line in (("passwd", "root:x:0:0:root:/root:/bin/bash"), ("group", "root:x:0:"),
                       ("shadow", "root:*:19000:0:99999:7:::"), ("gshadow", "root:*::")):
        (folder / "etc" / name).write_text(line + "\n")
    return folder


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.mark.parametrize("local_pbx", [False, True], ids=["run", "up"])
def test_install_makes_the_user_directories_and_a_hardened_unit_systemd_verifies(
        tmp_path: Path, local_pbx: bool) -> None:
    root = seeded_root(tmp_path / "root")
    pbx = ["--local-pbx"] if local_pbx else []
    before = files_in(root)
    dry = backline("install", "--config", str(EXAMPLE), "--root", str(root), "--dry-run", *pbx)
    assert dry.returncode == 0, dry
    assert all(line.startswith("would") for line in dry.stdout.splitlines()), dry.stdout
    assert "useradd" in dry.stdout and "enable backline.service" in dry.stdout
    assert files_in(root) == before  # a dry run changes nothing

    done = backline("install", "--config", str(EXAMPLE), "--root", str(root), *pbx)
    assert done.returncode == 0, done
    [user] = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
              if line.startswith("backline:")]
    uid, gid = int(user[2]), int(user[3])
    assert user[5:] == ["/var/lib/backline", "/usr/sbin/nologin"], user
    assert 0 < uid < 1000  # a system account
    assert owner_mode(root / "var/lib/backline") == (uid, gid, 0o750)
    assert owner_mode(root / "etc/backline") == (0, gid, 0o750)
    env = root / "etc/backline/backline.env"
    assert owner_mode(env) == (0, gid, 0o640)
    assert "BACKLINE_AMI_SECRET=\n" in env.read_text()  # the names, to fill in; no values

    unit = (root / UNIT).read_text()
    for line in ("Type=notify", "User=backline", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "PrivateTmp=yes", "LimitNOFILE=65536", "StandardError=journal",
                 "EnvironmentFile=-/etc/backline/backline.env"):
        assert f"\n{line}\n" in unit, (line, unit)
    assert unit_command(unit, "ExecStart")[-2:] == ["up" if local_pbx else "run", str(EXAMPLE)]
    assert unit_command(unit, "ExecReload")[-2:] == ["reload", str(EXAMPLE)]
    writable = re.search(r"\nReadWritePaths=(.*)\n", unit)
    assert writable and "/var/lib/backline" in writable.group(1).split(), unit
    assert ("KillMode=process" in unit) == local_pbx  # Asterisk outlives a controller crash
    wants = root / "etc/systemd/system/multi-user.target.wants/backline.service"
    assert os.readlink(wants) == "/etc/systemd/system/backline.service"  # enabled

    verified = subprocess.run([SYSTEMD_ANALYZE, "verify", str(root / UNIT)],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and verified.stdout + verified.stderr == "", verified
    rated = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", str(root / UNIT)],
                           capture_output=True, text=True, timeout=60)
    exposure = re.search(r"Overall exposure level for backline\.service: ([0-9.]+)",
                         rated.stdout + rated.stderr)
    assert exposure, rated
    # systemd's scale: 10 is a unit with no hardening at all (0-2 SAFE, 2-5 OK).
    assert float(exposure.group(1)) < (5.0 if local_pbx else 4.0), rated.stdout[-2000:]

    again = backline("install", "--config", str(EXAMPLE), "--root", str(root), *pbx)
    assert again.returncode == 0, again
    assert "user backline exists" in again.stdout and "kept as it is" in again.stdout

    journal = root / "var/lib/backline/journal.db"
    journal.write_bytes(b"the practice's history")
    removed = backline("uninstall", "--root", str(root))
    assert removed.returncode == 0, removed
    assert not (root / UNIT).exists() and not wants.is_symlink()
    assert journal.read_bytes() == b"the practice's history" and env.exists()
    assert "backline:" in (root / "etc/passwd").read_text()


def test_the_unit_lets_the_controller_write_its_voicemail_store_wherever_the_faxes_are(
        tmp_path: Path) -> None:
    # The journal on PostgreSQL and the faxes on their own disk: under ProtectSystem=strict
    # the controller writes only ReadWritePaths, and it keeps voicemail beside the faxes.
    config = tmp_path / "practice.yaml"
    config.write_text(EXAMPLE.read_text()
                      .replace("    kind: asterisk\n", "    kind: asterisk\n    node: node1\n")
                      .replace("sqlite:///var/lib/backline/journal.db",
                               "postgresql://backline@127.0.0.1:5432/backline")
                      .replace("fax_dir: /var/lib/backline/fax", "fax_dir: /srv/faxes/in"))
    root = seeded_root(tmp_path / "root")
    done = backline("install", "--config", str(config), "--root", str(root))
    assert done.returncode == 0, done
    writable = re.search(r"\nReadWritePaths=(.*)\n", (root / UNIT).read_text())
    assert writable, done
    paths = [Path(p) for p in writable.group(1).split()]
    store = voicemail_store(Path("/srv/faxes/in"))
    assert any(store.is_relative_to(p) for p in paths), (store, paths)
    assert owner_mode(root / str(store).lstrip("/"))[2] == 0o750


def test_install_never_takes_over_a_directory_other_programs_keep_files_in(
        tmp_path: Path) -> None:
    # The journal put straight into /var/lib: that directory is the system's, holding other
    # services' state (Asterisk's, PostgreSQL's).  Made the controller's (0750) it would
    # lock them out of it; install stops and says so, and changes nothing there.
    config = tmp_path / "practice.yaml"
    config.write_text(EXAMPLE.read_text().replace("sqlite:///var/lib/backline/journal.db",
                                                  "sqlite:///var/lib/journal.db"))
    root = seeded_root(tmp_path / "root")
    shared = root / "var/lib"
    (shared / "asterisk").mkdir(parents=True)
    os.chmod(shared, 0o755)
    before = owner_mode(shared)
    done = backline("install", "--config", str(config), "--root", str(root))
    assert done.returncode == 1, done
    assert f"{shared} holds files that are not Backline's" in done.stderr, done.stderr
    assert owner_mode(shared) == before
    assert not (root / UNIT).exists()
    assert "backline:" not in (root / "etc/passwd").read_text()  # stopped before any step


@pytest.mark.asterisk
async def test_the_unit_s_exec_start_reaches_ready_and_its_exec_reload_applies_a_change(
        tmp_path: Path) -> None:
    async with practice_pbx(tmp_path, "unit", controller_in_process=False) as pbx:
        root = seeded_root(tmp_path / "root")
        config = str(pbx.config_path)
        installed = await asyncio.to_thread(backline, "install", "--config", config,
                                            "--root", str(root))
        assert installed.returncode == 0, installed
        unit = (root / UNIT).read_text()
        start, reload = unit_command(unit, "ExecStart"), unit_command(unit, "ExecReload")
        # systemd's notification socket, as Type=notify hands the service one.
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"),
               AMI_ENV: os.environ[AMI_ENV]}
        service = Backline(argv=start, env=env)
        try:
            await asyncio.to_thread(service.wait_for, "ready", 60)
            told = await asyncio.to_thread(notify.recv, 4096)
            assert told.split(b"\n")[0] == b"READY=1", told

            text = pbx.config_path.read_text()
            pbx.config_path.write_text(text.replace(OLD_SCHED, NEW_SCHED))
            applied = await asyncio.to_thread(
                subprocess.run, reload, capture_output=True, text=True, timeout=60, env=env)
            assert applied.returncode == 0, applied
            assert f"reload (pid {service.proc.pid}): applied" in applied.stdout, applied
            await asyncio.to_thread(service.wait_for, "reload of", 60)

            pbx.config_path.write_text(text.replace(OLD_SCHED, 'owner: "user:nobody"'))
            refused = await asyncio.to_thread(
                subprocess.run, reload, capture_output=True, text=True, timeout=60, env=env)
            assert refused.returncode == 2 and "not reloaded" in refused.stderr, refused
            assert service.proc.poll() is None
        finally:
            service.signal(signal.SIGTERM)  # what `systemctl stop` sends
            notify.close()
        assert service.proc.returncode == 0, "".join(service.lines)


@pytest.mark.asterisk
def test_a_sighup_while_up_is_starting_is_held_until_ready_then_reloads(
        tmp_path: Path) -> None:
    with up_practice(tmp_path) as (cfg, _, instance):
        up = Backline("up", str(cfg))
        try:
            # Asterisk launched (its pid file names it) and `up` waiting on its boot: the
            # controller does not exist yet.  Asterisk is held still meanwhile, so `up`
            # cannot get further before the SIGHUP is taken.
            deadline = time.monotonic() + 60
            while (asterisk := instance.find_running()) is None:
                assert up.proc.poll() is None, up.finish(5)
                assert time.monotonic() < deadline, "Asterisk never started"
                time.sleep(0.01)  # a poll of the process table, not a wait for time
            os.kill(asterisk, signal.SIGSTOP)
            try:
                up.proc.send_signal(signal.SIGHUP)
                up.wait_for(HELD, 30)
            finally:
                os.kill(asterisk, signal.SIGCONT)
            up.wait_for("ready", 90)
            up.wait_for("reload of", 30)
            assert up.proc.poll() is None
            lines = up.lines
            held = next(i for i, line in enumerate(lines) if HELD in line)
            ready = next(i for i, line in enumerate(lines) if line.startswith("ready"))
            applied = next(i for i, line in enumerate(lines) if "reload of" in line)
            assert held < ready < applied, "".join(lines)
            assert "applied to the controller" in lines[applied], lines[applied]
        finally:
            up.signal(signal.SIGTERM)
        assert up.proc.returncode == 0, "".join(up.lines)
