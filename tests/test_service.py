"""Backline as a service: what a service manager does to it.

- A SIGHUP that comes while `backline up` is still starting (Asterisk booting, no controller
  yet) is held until the controller is ready and then reloads; it never ends the process.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.harness.backline_process import BacklineProcess as Backline
from tests.test_crash_restart import up_practice

ROOT = Path(__file__).resolve().parent.parent
HELD = "SIGHUP before the controller is ready"


@pytest.mark.asterisk
def test_a_sighup_while_up_is_starting_is_held_until_ready_then_reloads(
        tmp_path: Path) -> None:
    with up_practice(tmp_path) as (cfg, _, instance):
        up = Backline("up", str(cfg))
        try:
            # Asterisk launched (its pid file names it) and `up` waiting on its boot: the
            # controller does not exist yet.
            deadline = time.monotonic() + 60
            while instance.find_running() is None:
                assert up.proc.poll() is None, up.finish(5)
                assert time.monotonic() < deadline, "Asterisk never started"
                time.sleep(0.01)
            up.proc.send_signal(signal.SIGHUP)
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
