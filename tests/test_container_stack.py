"""The compose stack for real: images built here (tests/harness/container_images.py), the
stack run by Docker Compose v2 against podman's Docker API, and a carrier's call through it.

The carrier is SIPp on this host, on the address the host has on the stack's `edge`
network; it calls Asterisk's container there.  The outage is engaged with the CLI inside the
controller's container, which waits until the controller (logged in to Asterisk's AMI from its
own address) has the PBX in outage mode; the caller then hears the announcement (its audio
read off the edge network's bridge), and the attempt is a row of the journal in the
PostgreSQL container.  The stack and its volumes are removed afterwards.

Nothing leaves this machine: no port is published (the host's 5060 stays free), and the
controller's outside peers (SMTP, SMS gateway, inbox) resolve nowhere (its DNS is its own
loopback).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import select
import signal
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pypdf import PdfReader

from backline.localpbx.inotify import DirectoryWatch
from backline.localpbx.pbxroot import default_root
from tests.fax_samples import STANDARD, fax_tiff, letter
from tests.harness import container_images
from tests.harness.fax_sender import FaxSender
from tests.harness.sipp import Host, place_calls
from tests.harness.tones import FRAME, ULAW, udp_payloads
from tests.test_containers import COMPOSE, DOCKER, SECRET_NAMES, compose_binary

PROJECT = "backline-test"
DIRECT = "+13125550100"
CARRIER = "+13125550142"
FAX_NUMBER = "+13125550109"
CONFIG_IN_CONTAINER = "/etc/backline/backline.yaml"

# One xdist worker runs both tests (scripts/test.sh passes --dist loadgroup): the module's stack
# is started once, not once per worker.
pytestmark = [pytest.mark.timeout(1800), pytest.mark.xdist_group("compose-stack")]


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@dataclass(frozen=True)
class Stack:
    compose: list[str]
    env: dict[str, str]
    workdir: Path

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.compose, *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False)

    def container(self, service: str) -> str:
        return f"{PROJECT}-{service}-1"

    def exec(self, service: str, *argv: str, timeout: float = 180
             ) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.container(service), *argv, timeout=timeout)

    def wait_for_line(self, service: str, prefix: str, within: float) -> None:
        """Until the service's output has a line starting with ``prefix`` (its log followed
        as it is written), or fail after ``within`` seconds with every service's log."""
        follow = subprocess.Popen(["podman", "logs", "--follow", self.container(service)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert follow.stdout is not None
        deadline = time.monotonic() + within
        pending = b""
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([follow.stdout], [], [], left)[0]:
                    pytest.fail(f"{service}: no line starting {prefix!r} in {within:g} s\n"
                                + self.logs(), pytrace=False)
                chunk = os.read(follow.stdout.fileno(), 65536)
                if not chunk:
                    pytest.fail(f"{service} stopped before {prefix!r}\n" + self.logs(),
                                pytrace=False)
                pending += chunk
                if any(line.startswith(prefix.encode()) for line in pending.split(b"\n")):
                    return
        finally:
            follow.terminate()
            follow.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(f"--- {s}\n{podman('logs', self.container(s)).stderr[-3000:]}"
                         for s in ("render", "asterisk", "controller", "postgres"))


@pytest.fixture(scope="module")
def podman_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """podman's Docker-compatible API on a socket of these tests' own (started here,
    stopped after); returns once the socket is there."""
    sock_dir = tmp_path_factory.mktemp("podman")
    sock = sock_dir / "podman.sock"
    with DirectoryWatch(sock_dir) as watch:
        proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while not sock.exists():
                if proc.poll() is not None:
                    err = proc.stderr.read() if proc.stderr else b""
                    pytest.fail(f"podman system service exited: {err!r}", pytrace=False)
                if not select.select([watch], [], [], 30)[0]:
                    pytest.fail("podman system service made no socket in 30 s", pytrace=False)
                watch.drain()
            yield sock
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Healthchecks:
    """podman runs a container's healthcheck from systemd timers, and there is no systemd
    here: this thread runs `podman healthcheck run` for the stack's checked containers, one
    check after the other, as the timer would."""

    def __init__(self, containers: list[str]) -> None:
        self.containers = containers
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stopped.is_set():
            for name in self.containers:
                podman("healthcheck", "run", name, timeout=60)
            self.stopped.wait(1.0)  # the interval between checks, not a wait for an event

    def __enter__(self) -> Healthchecks:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=90)


def practice_config(tmp_path: Path, carrier: str) -> Path:
    """The containers' practice config with the carrier where this test's SIPp is."""
    text = (DOCKER / "backline.yaml").read_text()
    text = text.replace("    sip: {host: 172.31.0.12, port: 5060}\n",
                        "    sip: {host: 172.31.0.12, port: 5060}\n"
                        f"    trunk: {{host: {carrier}, port: 5060, addresses: [{carrier}], "
                        "insecure_cleartext: true}\n")
    assert carrier in text
    path = tmp_path / "backline.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def stack(podman_socket: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack, up for this module's tests (one after the other) and removed after."""
    tmp_path = tmp_path_factory.mktemp("stack")
    images = container_images.build_all()
    assert set(images) >= {"localhost/backline-controller", "localhost/backline-asterisk"}
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name in SECRET_NAMES:
        value = "2468" if name == "backup_pin" else secrets.token_urlsafe(18)
        (secrets_dir / name).write_text(value + "\n")
        (secrets_dir / name).chmod(0o644)  # bind-mounted: read by the containers' own users
    carrier = "172.31.0.1"  # the host's own address on `edge` (the network's gateway)
    override = tmp_path / "compose.test.yaml"
    cfg = practice_config(tmp_path, carrier)
    override.write_text(f"""\
services:
  render:
    volumes: ["{cfg}:{CONFIG_IN_CONTAINER}:ro"]
  controller:
    volumes: ["{cfg}:{CONFIG_IN_CONTAINER}:ro"]
    dns: ["127.0.0.1"]
  asterisk:
    ports: !reset []
""")
    env = {**os.environ, "DOCKER_HOST": f"unix://{podman_socket}",
           "BACKLINE_SECRETS_DIR": str(secrets_dir), "COMPOSE_PROJECT_NAME": PROJECT}
    env.pop("DOCKER_CONFIG", None)
    compose = [str(compose_binary()), "-f", str(COMPOSE), "-f", str(override),
               "--project-directory", str(DOCKER), "-p", PROJECT]
    s = Stack(compose, env, tmp_path)
    container_images.CACHE.mkdir(parents=True, exist_ok=True)
    # One stack at a time on this machine: its networks' subnets are fixed.
    with open(container_images.CACHE / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        s.run("down", "--volumes", "--remove-orphans", "--timeout", "5")  # a crashed run's
        try:
            with Healthchecks([s.container("postgres")]):
                # Returns once the controller's dependencies are met (PostgreSQL healthy,
                # render done) and everything is started.
                up = s.run("up", "--detach", "--no-build", "--pull", "never", timeout=420)
            assert up.returncode == 0, up.stderr[-4000:] + s.logs()
            yield s
        finally:
            down = s.run("down", "--volumes", "--remove-orphans", "--timeout", "10")
            assert down.returncode == 0, down.stderr
            left = podman("ps", "--all", "--filter", f"label=com.docker.compose.project={PROJECT}",
                          "--format", "{{.Names}}")
            assert left.stdout.strip() == ""
            vols = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
            assert not [v for v in vols if v.startswith(f"{PROJECT}_")]


def bridge_of(network: str) -> str:
    done = podman("network", "inspect", network)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)[0]["network_interface"])


class Capture:
    """dumpcap on one interface, into a pcap file; started when dumpcap says it captures."""

    def __init__(self, interface: str, pcap: Path, bpf: str) -> None:
        self.pcap = pcap
        self.proc = subprocess.Popen(["dumpcap", "-q", "-i", interface, "-f", bpf, "-w",
                                      str(pcap)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "Capturing on '...'" once the filter is set
        assert "Capturing on" in line, line + self.proc.stderr.read()

    def stop(self) -> Path:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        return self.pcap


def envelope(samples: list[int]) -> list[float]:
    """Mean absolute level per 20 ms frame."""
    return [sum(abs(x) for x in samples[i:i + FRAME]) / FRAME
            for i in range(0, len(samples) - FRAME + 1, FRAME)]


def best_correlation(heard: list[float], played: list[float], max_lag: int = 100) -> float:
    """The highest Pearson correlation of the two level envelopes over a lag of up to
    ``max_lag`` frames (the call's set-up against the recording's first frame)."""
    best = -1.0
    n = len(played)
    for lag in range(min(max_lag, max(1, len(heard) - n + 1))):
        a, b = heard[lag:lag + n], played[:len(heard[lag:lag + n])]
        if len(a) < n * 0.9:
            break
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
        va = sum((x - ma) ** 2 for x in a) ** 0.5
        vb = sum((y - mb) ** 2 for y in b) ** 0.5
        if va and vb:
            best = max(best, cov / (va * vb))
    return best


def wav_samples(path: Path) -> list[int]:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        raw = w.readframes(w.getnframes())
    return [int.from_bytes(raw[i:i + 2], "little", signed=True) for i in range(0, len(raw), 2)]


def test_a_carrier_call_through_the_compose_stack_hears_the_announcement_and_is_journaled(
        stack: Stack, tmp_path: Path) -> None:
    # The controller serving: logged in to Asterisk's AMI from its own address, the journal
    # open in PostgreSQL (with the AMI user kept to Asterisk's own address, it never is).
    stack.wait_for_line("controller", "ready", within=180)
    # The outage, engaged in the controller's container: the CLI waits until the running
    # controller reports the PBX has it.
    engaged = stack.exec("controller", "backline-entrypoint", "outage", "engage", "--reason",
                         "carrier down", "--by", "ops", "--wait", "60", "--config",
                         CONFIG_IN_CONTAINER)
    assert engaged.returncode == 0, engaged.stdout + engaged.stderr + stack.logs()
    assert "in effect on the PBX" in engaged.stdout, engaged.stdout
    mode = stack.exec("asterisk", "asterisk", "-rx", "database get backline mode")
    assert "outage" in mode.stdout, mode.stdout + mode.stderr
    # Asterisk runs every file render wrote, not only the six the entrypoint once listed:
    # parking, music on hold and the 911 location were left at Debian's defaults.
    for name in ("res_parking.conf", "musiconhold.conf", "geolocation.conf"):
        installed = stack.exec("asterisk", "head", "-n", "1", f"/etc/asterisk/{name}")
        assert "Rendered by `backline render`" in installed.stdout, (name, installed.stdout)
    # What Asterisk writes to the shared spool (voicemail, faxes) is not for other users.
    umask = stack.exec("asterisk", "grep", "^Umask:", "/proc/1/status")
    assert umask.stdout.split() == ["Umask:", "0007"], umask.stdout + umask.stderr

    carrier = "172.31.0.1"
    capture = Capture(bridge_of(f"{PROJECT}_edge"), tmp_path / "edge.pcap",
                      "udp and src host 172.31.0.12")
    try:
        call = place_calls(("172.31.0.12", 5060), tmp_path, DIRECT, from_user=CARRIER,
                           timeout=90, host=Host(address=carrier))
        result = call.wait(120)
        assert result.ok and result.successful == 1, call.describe() + stack.logs()
    finally:
        pcap = capture.stop()

    # What the caller heard is the announcement `render` wrote into the shared volume.
    vol = podman("volume", "inspect", f"{PROJECT}_pbx-config", "--format", "{{.Mountpoint}}")
    announcement = Path(vol.stdout.strip()) / "announcement.wav"
    played = envelope(wav_samples(announcement))
    heard_samples = [ULAW[b] for p in udp_payloads(pcap) if len(p) == 12 + FRAME
                     for b in p[12:]]
    heard = envelope(heard_samples)
    assert len(played) > 5 * 50  # more than 5 s of speech
    assert len(heard) >= len(played) - 10, (len(heard), len(played))  # all of it
    assert best_correlation(heard, played) > 0.9

    # The attempt, journaled by the controller in the PostgreSQL container.
    rows = stack.exec("postgres", "psql", "--username=backline", "--dbname=backline",
                      "--no-align", "--tuples-only", "--field-separator=|", "--command",
                      "SELECT kind, mode, sender, recipient, node FROM attempts "
                      "WHERE kind = 'call'")
    assert rows.returncode == 0, rows.stderr
    assert rows.stdout.split() == [f"call|outage|{CARRIER}|{DIRECT}|node1"], rows.stdout


async def test_a_fax_from_the_carrier_lands_as_a_pdf_on_the_state_volume_owned_by_backline(
        stack: Stack, tmp_path: Path) -> None:
    """A fax machine at the carrier (a second Asterisk on the host's `edge` address) sends a
    page to the fax number: Asterisk's container receives it into the spool volume, the
    controller's container turns it into a PDF in the state volume, owned by the
    controller's user, and journals it in PostgreSQL."""
    stack.wait_for_line("controller", "ready", within=180)
    vol = podman("volume", "inspect", f"{PROJECT}_state", "--format", "{{.Mountpoint}}")
    fax_dir = Path(vol.stdout.strip()) / "fax"
    assert fax_dir.is_dir(), vol.stdout + vol.stderr
    sender = FaxSender(f"fs-ctr-{os.urandom(3).hex()}", sip_port=5060, practice_sip=5060,
                       root=default_root(), address="172.31.0.1",
                       practice_address="172.31.0.12")
    with DirectoryWatch(fax_dir) as watch:
        await sender.start()
        try:
            document = sender.document("one", fax_tiff((letter(STANDARD, 1),),
                                                       coding="group3"))
            sent = await sender.send(FAX_NUMBER, document, within=300)
            assert (sent.answered, sent.status, sent.pages) == (True, "SUCCESS", 1), \
                (sent, stack.logs())
        finally:
            await sender.stop()
        deadline = time.monotonic() + 120
        while not list(fax_dir.glob("*.pdf")):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([watch], [], [], left)[0]:
                pytest.fail("no PDF in the state volume\n" + stack.logs(), pytrace=False)
            watch.drain()
    (pdf,) = fax_dir.glob("*.pdf")
    uid = stack.exec("controller", "id", "-u").stdout.strip()
    assert str(pdf.stat().st_uid) == uid != "0"
    assert PdfReader(pdf, strict=True).pages  # a whole PDF, readable

    # Journaled in the PostgreSQL container (right after the PDF is verified).
    deadline = time.monotonic() + 60
    while True:
        rows = stack.exec("postgres", "psql", "--username=backline", "--dbname=backline",
                          "--no-align", "--tuples-only", "--field-separator=|", "--command",
                          "SELECT recipient, outcome, file FROM attempts WHERE kind = 'fax'")
        assert rows.returncode == 0, rows.stderr
        if rows.stdout.strip() or time.monotonic() > deadline:
            break
    assert rows.stdout.split() == [f"{FAX_NUMBER}|received|/var/lib/backline/fax/{pdf.name}"]
