"""The real-Asterisk harness against the real Asterisk: instances, modules, SIPp phones.

Every test builds its own instance (own name, own ports), so the file runs
under pytest-xdist beside itself and beside other people's Asterisk tests.
The pjsip.conf/extensions.conf here are hand-written on purpose: they test the
harness, not Backline's renderer.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from backline.localpbx.instance import (
    AsteriskCliError,
    AsteriskError,
    AsteriskInstance,
    AsteriskStartError,
    read_ami_banner,
)
from backline.localpbx.pbxroot import DEVICES, RootError, ensure_devices, ensure_root
from backline.localpbx.ports import LOOPBACK, AsteriskPorts
from backline.render.modules import modules_conf, required_modules
from tests.harness.netns import Topology
from tests.harness.ports import asterisk_ports
from tests.harness.sipp import (
    DeskPhoneMode,
    Host,
    SippError,
    answering_phone,
    desk_phone,
    free_media_port,
    free_udp_port,
    parse_message_log,
    place_calls,
    write_dtmf_pcap,
)

pytestmark = pytest.mark.asterisk

AMI_USER = "harness"
AMI_SECRET = "harness-secret-not-for-production"
PASSWORDS = {"ana-desk": "ana-Secret-1", "bo-desk": "bo-Secret-2"}
PRACTICE_NUMBER = "+13125550100"


@pytest.fixture(scope="module", autouse=True)
def _root() -> None:
    """Build the root on first use; xdist workers wait on its lock instead of building too."""
    try:
        ensure_root()
    except RootError as exc:
        pytest.skip(str(exc))


def _instance_name(request: pytest.FixtureRequest, suffix: str = "") -> str:
    """Unique per test and per xdist worker: the name becomes /srv/backline-NAME."""
    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[-32:]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"t-{worker}-{test}{suffix}-{os.getpid()}"


def manager_conf(ports: AsteriskPorts, *, enabled: bool = True) -> str:
    return (
        "[general]\n"
        f"enabled = {'yes' if enabled else 'no'}\n"
        f"port = {ports.ami}\n"
        f"bindaddr = {LOOPBACK}\n"
        f"[{AMI_USER}]\n"
        f"secret = {AMI_SECRET}\n"
        "deny = 0.0.0.0/0.0.0.0\n"
        "permit = 127.0.0.1/255.255.255.255\n"
        "read = all\n"
        "write = all\n"
    )


def pjsip_conf(ports: AsteriskPorts, carrier_port: int | None) -> str:
    """Two desk phones with digest auth, one carrier identified by its SIP user.

    direct_media=no: with two SIPp legs Asterisk would otherwise re-INVITE
    them to talk RTP directly, and SIPp counts the re-INVITE as a failure.
    """
    text = f"""\
[global]
type = global
user_agent = Backline harness PBX

[udp]
type = transport
protocol = udp
bind = {LOOPBACK}:{ports.sip}

[endpoint-base](!)
type = endpoint
transport = udp
disallow = all
allow = ulaw
direct_media = no

[carrier](endpoint-base)
context = from-carrier
aors = carrier
send_pai = yes

[carrier]
type = aor
"""
    if carrier_port is not None:
        text += f"contact = sip:carrier@{LOOPBACK}:{carrier_port}\n"
    for user, password in PASSWORDS.items():
        text += f"""
[{user}](endpoint-base)
context = desks
auth = {user}
aors = {user}
callerid = {user} <{user}>

[{user}]
type = auth
auth_type = userpass
username = {user}
password = {password}

[{user}]
type = aor
max_contacts = 1
remove_existing = yes
"""
    return text


EXTENSIONS_CONF = f"""\
[from-carrier]
; the practice number rings both desk phones at once
exten => {PRACTICE_NUMBER},1,Dial(PJSIP/ana-desk&PJSIP/bo-desk,10)
 same => n,Hangup()
; an announcement: answer, play, hang up (the caller must take our BYE); the
; connected-line change reaches the caller as a re-INVITE mid-call
exten => 700,1,Answer()
 same => n,Set(CONNECTEDLINE(all)="Front Desk" <+13125550100>)
 same => n,Playback(beep)
 same => n,Hangup()
; four digits go to the astdb, so the test can read what Asterisk heard
exten => 600,1,Answer()
 same => n,Read(DIGITS,,4,,1,4)
 same => n,Set(DB(harness/digits)=${{DIGITS}})
 same => n,Hangup()
; FastAGI to whatever the test listens on (set with `dialplan set global`)
exten => 800,1,Answer()
 same => n,AGI(agi://127.0.0.1:${{AGI_PORT}}/check)
 same => n,Hangup()
; the outage lamp: a custom device state behind a hint desk phones subscribe to
exten => outage,hint,Custom:outage

[desks]
exten => _+1NXXNXXXXXX,1,Set(CALLERID(all)="Maple Street" <{PRACTICE_NUMBER}>)
 same => n,Dial(PJSIP/${{EXTEN}}@carrier,10)
 same => n,Hangup()
"""


def pbx_files(ports: AsteriskPorts, carrier_port: int | None = None) -> dict[str, str]:
    return {
        "manager.conf": manager_conf(ports),
        "pjsip.conf": pjsip_conf(ports, carrier_port),
        "extensions.conf": EXTENSIONS_CONF,
        "voicemail.conf": "[general]\nformat = wav\n[default]\n100 => 1234,Front Desk\n",
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class MakeInstance(Protocol):
    def __call__(self, suffix: str = "", *, carrier_port: int | None = None) -> AsteriskInstance:
        ...


@pytest.fixture
def make_instance(request: pytest.FixtureRequest) -> Iterator[MakeInstance]:
    """Build instances that are killed and removed after the test, whatever happens.

    BACKLINE_KEEP_INSTANCES=1 keeps the trees (config, logs) for a post-mortem.
    """
    made: list[AsteriskInstance] = []

    def make(suffix: str = "", *, carrier_port: int | None = None) -> AsteriskInstance:
        ports = asterisk_ports()
        inst = AsteriskInstance(
            _instance_name(request, suffix), ports, pbx_files(ports, carrier_port)
        )
        made.append(inst)
        return inst

    yield make
    for inst in made:
        inst.kill()
        if not os.environ.get("BACKLINE_KEEP_INSTANCES"):
            inst.remove()


class Ami:
    """A bare blocking AMI session: enough to collect events after a call."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=30)  # bounds a hang
        self.buf = b""
        self.read_message()  # banner line ends with one CRLF; tolerated by read_message
        self.send({"Action": "Login", "Username": AMI_USER, "Secret": AMI_SECRET})

    def send(self, fields: dict[str, str]) -> None:
        self.sock.sendall("".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n")

    def read_message(self) -> dict[str, str]:
        while True:
            sep = b"\r\n\r\n" if not self.buf.startswith(b"Asterisk Call Manager") else b"\r\n"
            if sep in self.buf:
                raw, self.buf = self.buf.split(sep, 1)
                fields = {}
                for line in raw.decode(errors="replace").split("\r\n"):
                    key, _, value = line.partition(": ")
                    fields[key] = value
                return fields
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("AMI closed")
            self.buf += chunk

    def events_until(self, event: str, count: int) -> list[dict[str, str]]:
        """Every message up to and including the COUNT-th EVENT (30 s socket timeout)."""
        seen: list[dict[str, str]] = []
        while sum(1 for m in seen if m.get("Event") == event) < count:
            seen.append(self.read_message())
        return seen

    def close(self) -> None:
        self.sock.close()


# ----- instances


def test_instance_starts_answers_ami_and_cli(make_instance: MakeInstance) -> None:
    inst = make_instance()
    # start() returns once Asterisk logged "Asterisk Ready." and AMI sent its banner (it
    # raises otherwise): that is the promise, not how long a loaded machine took.
    inst.start(timeout=60)
    assert inst.running
    assert read_ami_banner(LOOPBACK, inst.ports.ami, 30).startswith("Asterisk Call Manager/")
    assert "Asterisk 22." in inst.cli("core show version")
    transports = inst.cli("pjsip show transports")
    assert f"{LOOPBACK}:{inst.ports.sip}" in transports
    with pytest.raises(AsteriskCliError):
        inst.cli("no such command here")
    pid = inst.pid
    assert pid is not None
    assert inst.stop() == 0
    assert not _alive(pid)
    assert inst.pid is None


def test_every_required_module_is_running(make_instance: MakeInstance) -> None:
    inst = make_instance()
    inst.start()
    # "module show" rows: Module, Description, Use Count, Status, Support Level
    running = {
        line.split()[0].removesuffix(".so")
        for line in inst.cli("module show").splitlines()
        if " Running " in line
    }
    missing = sorted(set(required_modules()) - running)
    assert not missing, f"required but not running: {missing}"
    # autoload is off: nothing beyond the list (and core parts) sneaks in.
    extra = sorted(
        name
        for name in running
        if name not in required_modules() and name.startswith(("app_", "res_", "chan_", "func_"))
    )
    assert not extra, f"loaded but not in modules_conf(): {extra}"
    assert "autoload = no" in modules_conf()
    assert "app_voicemail_odbc" not in modules_conf()


def test_needed_features_work(make_instance: MakeInstance, tmp_path: Path) -> None:
    """Each capability modules_conf() is for: not only loaded, but answering."""
    inst = make_instance()
    inst.start()
    assert "Front Desk" in inst.cli("voicemail show users")
    inst.cli("devstate change Custom:outage INUSE")
    hints = inst.cli("core show hints")
    assert re.search(r"outage@from-carrier\s*: Custom:outage .* State:InUse", hints), hints
    capabilities = inst.cli("fax show capabilities")
    assert re.search(r"Type\s*: Spandsp", capabilities), capabilities
    assert re.search(r"Capabilities\s*: SEND RECEIVE T\.38", capabilities), capabilities
    inst.cli("database put backline outage engaged")
    assert "engaged" in inst.cli("database get backline outage")
    # AGI(): Asterisk connects to our FastAGI port and sends its variables.
    with socket.create_server((LOOPBACK, 0)) as agi:
        agi.settimeout(30)  # accept() returns on Asterisk's connection; this bounds a hang
        inst.cli(f"dialplan set global AGI_PORT {agi.getsockname()[1]}")
        caller = place_calls((LOOPBACK, inst.ports.sip), tmp_path, "800", from_user="carrier")
        conn, _ = agi.accept()
        with conn:
            conn.settimeout(30)
            head = b""
            while b"\n\n" not in head:
                chunk = conn.recv(4096)
                assert chunk, "AGI closed before its variables ended"
                head += chunk
        # Closing the socket ends AGI(); the dialplan hangs up; the caller takes the BYE.
        assert caller.wait(timeout=60).ok, caller.describe()
    assert b"agi_network_script: check" in head
    assert b"agi_callerid: carrier" in head


def test_two_instances_run_side_by_side(make_instance: MakeInstance) -> None:
    first, second = make_instance("-a"), make_instance("-b")
    with first, second:
        assert first.pid != second.pid
        for inst in (first, second):
            assert read_ami_banner(LOOPBACK, inst.ports.ami, 30)
            assert f"{LOOPBACK}:{inst.ports.sip}" in inst.cli("pjsip show transports")
        # Each CLI reaches its own instance: state set on one is absent on the other.
        first.cli("database put harness where first")
        assert "first" in first.cli("database get harness where")
        assert "not found" in second.cli("database get harness where")
    assert not first.running and not second.running


def test_kill_leaves_no_process(make_instance: MakeInstance) -> None:
    inst = make_instance()
    inst.start()
    pid = inst.pid
    assert pid is not None
    assert inst.kill() == -9
    assert not _alive(pid)
    assert inst.kill() is None  # idempotent
    inst.start()  # a killed instance starts again on the same tree
    assert inst.running
    inst.stop()


def test_a_running_instance_is_found_adopted_and_never_started_twice(
        make_instance: MakeInstance) -> None:
    first = make_instance()
    first.start()
    pid = first.pid
    assert pid is not None
    # Another process's view of the same instance (a `backline up` started after a crash).
    again = AsteriskInstance(first.name, first.ports, pbx_files(first.ports))
    assert again.find_running() == pid
    control = again.host_path(again.dir("run") / "asterisk.ctl")
    again.host_path(again.dir("run") / "asterisk.pid").unlink()  # as an old `up` left it
    assert again.find_running() == pid
    with pytest.raises(AsteriskError, match=f"already running \\(pid {pid}"):
        again.start()
    assert control.exists() and "Asterisk 22." in again.cli("core show version")
    again.adopt(pid)
    assert again.running and again.pid == pid
    assert again.stop() is None  # its exit status is its own parent's
    assert again.find_running() is None and not again.running
    first.kill()


def test_start_failure_carries_the_log_tail(make_instance: MakeInstance) -> None:
    inst = make_instance()
    files = pbx_files(inst.ports)
    inst.set_files({**files, "manager.conf": manager_conf(inst.ports, enabled=False)})
    with pytest.raises(AsteriskStartError) as failed:
        inst.start(timeout=60)  # fails at once when AMI refuses; this bounds a slow start
    assert "AMI" in str(failed.value)
    assert "Asterisk Ready." in failed.value.log_tail
    assert not inst.running


def test_owned_files_cannot_be_overridden(make_instance: MakeInstance) -> None:
    inst = make_instance()
    with pytest.raises(ValueError):
        inst.set_files({"rtp.conf": "[general]\nrtpstart=1\n"})
    with pytest.raises(ValueError):
        inst.set_files({"../escape.conf": ""})


def test_config_files_are_private_from_the_first_byte(make_instance: MakeInstance) -> None:
    inst = make_instance()
    etc = inst.host_path(inst.dir("etc"))
    etc.mkdir(parents=True, exist_ok=True)
    os.chmod(etc, 0o755)
    (etc / "manager.conf").write_text("old\n")
    os.chmod(etc / "manager.conf", 0o644)  # as an older tree left it
    old_umask = os.umask(0o022)
    try:
        inst.set_files(pbx_files(inst.ports))  # writes etc/ now, before any later chmod
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(etc.stat().st_mode) == 0o700
    written = sorted(etc.iterdir())
    assert {p.name for p in written} >= {"manager.conf", "pjsip.conf", "asterisk.conf"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} \
        == {p.name: 0o600 for p in written}


# ----- SIPp phones against the instance


def test_carrier_call_rings_both_desk_phones_one_answers(
    make_instance: MakeInstance, tmp_path: Path
) -> None:
    pbx = make_instance()
    pbx.start()
    sip = (LOOPBACK, pbx.ports.sip)
    ana = desk_phone(sip, tmp_path, "ana-desk", PASSWORDS["ana-desk"],
                     DeskPhoneMode.ANSWER_AND_HANG_UP, talk_ms=300)  # fmt: skip
    bo = desk_phone(sip, tmp_path, "bo-desk", PASSWORDS["bo-desk"], DeskPhoneMode.RING)
    with ana, bo:
        contacts = pbx.cli("pjsip show contacts")
        assert f"ana-desk/sip:ana-desk@{LOOPBACK}:{ana.port}" in contacts
        assert f"bo-desk/sip:bo-desk@{LOOPBACK}:{bo.port}" in contacts
        ami = Ami(pbx.ports.ami)
        try:
            caller = place_calls(sip, tmp_path, PRACTICE_NUMBER, from_user="carrier",
                                 caller_name="Pat Doe")  # fmt: skip
            result = caller.wait(timeout=60)
            assert result.ok and result.successful == 1, caller.describe()
            events = ami.events_until("DialEnd", 2)
        finally:
            ami.close()
        assert len(ana.invites()) == 1 and len(bo.invites()) == 1
        invite = ana.invites()[0]
        assert "Pat Doe" in (invite.header("From") or "")
    assert ana.result is not None and ana.result.successful == 1, ana.describe()
    assert bo.result is not None and bo.result.successful == 1, bo.describe()
    dial_ends = {
        e["DestChannel"].split("-")[0] + "-" + e["DestChannel"].split("-")[1]: e["DialStatus"]
        for e in events
        if e.get("Event") == "DialEnd"
    }
    assert dial_ends == {"PJSIP/ana-desk": "ANSWER", "PJSIP/bo-desk": "CANCEL"}


def test_announcement_call_expects_the_pbx_bye(
    make_instance: MakeInstance, tmp_path: Path
) -> None:
    pbx = make_instance()
    pbx.start()
    caller = place_calls((LOOPBACK, pbx.ports.sip), tmp_path, "700", from_user="carrier", calls=2,
                         extra_headers=["X-Backline-Test: announcement"])  # fmt: skip
    result = caller.wait(timeout=60)
    assert result.ok and result.successful == 2, caller.describe()
    sent = [m for m in caller.messages() if m.direction == "sent" and m.method == "INVITE"]
    assert all(m.header("X-Backline-Test") == "announcement" for m in sent)
    byes = caller.received("BYE")
    assert len({m.header("Call-ID") for m in byes}) == 2
    # Each call also took a connected-line re-INVITE mid-call without failing.
    reinvites = [
        m
        for m in caller.received("INVITE")
        if "Front Desk" in (m.header("P-Asserted-Identity") or "")
    ]
    assert len({m.header("Call-ID") for m in reinvites}) == 2, caller.describe()


@pytest.mark.parametrize("mode", ["rfc2833", "info"])
def test_dtmf_reaches_the_dialplan(
    make_instance: MakeInstance, tmp_path: Path, mode: str
) -> None:
    pbx = make_instance()
    pbx.start()
    caller = place_calls((LOOPBACK, pbx.ports.sip), tmp_path, "600", from_user="carrier",
                         dtmf="7741", dtmf_mode=mode)  # type: ignore[arg-type]  # fmt: skip
    result = caller.wait(timeout=60)
    assert result.ok, caller.describe()
    # A repeated key and a falling one: both broke with Debian's per-key pcaps.
    assert "Value: 7741" in pbx.cli("database get harness digits")


def test_desk_phone_call_out_carries_caller_id_to_the_carrier(
    make_instance: MakeInstance, tmp_path: Path
) -> None:
    carrier_port = free_udp_port()
    pbx = make_instance(carrier_port=carrier_port)
    pbx.start()
    sip = (LOOPBACK, pbx.ports.sip)
    with answering_phone(tmp_path, DeskPhoneMode.ANSWER_AND_HANG_UP, name="carrier",
                         port=carrier_port, talk_ms=200) as carrier:  # fmt: skip
        caller = place_calls(sip, tmp_path, "+13125550199", from_user="ana-desk",
                             password=PASSWORDS["ana-desk"])  # fmt: skip
        result = caller.wait(timeout=60)
        assert result.ok, caller.describe()
        assert caller.received(401), "the desk phone was challenged and authenticated"
        (invite,) = carrier.invites()
        assert invite.start_line.startswith("INVITE sip:+13125550199@")
        assert PRACTICE_NUMBER in (invite.header("From") or "")
        assert PRACTICE_NUMBER in (invite.header("P-Asserted-Identity") or "")
    assert carrier.result is not None and carrier.result.successful == 1


def test_rejecting_desk_phone_and_wrong_password(
    make_instance: MakeInstance, tmp_path: Path
) -> None:
    pbx = make_instance()
    pbx.start()
    sip = (LOOPBACK, pbx.ports.sip)
    with pytest.raises(SippError, match="registration failed"):
        desk_phone(sip, tmp_path, "bo-desk", "wrong-password")
    with desk_phone(sip, tmp_path, "ana-desk", PASSWORDS["ana-desk"],
                    DeskPhoneMode.REJECT) as ana:  # fmt: skip
        caller = place_calls(sip, tmp_path, PRACTICE_NUMBER, from_user="carrier")
        result = caller.wait(timeout=60)
        # Busy desk phone, nobody else: Dial ends, dialplan hangs up -> the carrier
        # gets a failure response, not an answer.
        assert result.failed == 1, caller.describe()
        assert ana.wait_for_invites(1)
    assert ana.result is not None and ana.result.successful == 1, ana.describe()


def test_message_log_parser() -> None:
    text = (
        "----------------------------------------------- 2026-01-01 00:00:00.000000\n"
        "UDP message received [10] bytes :\n\n"
        "INVITE sip:1@x SIP/2.0\nFrom: <sip:a@x>;tag=1\nCall-ID: c1\n"
        "Content-Length: 3\n\nv=0\n\n"
        "----------------------------------------------- 2026-01-01 00:00:00.000001\n"
        "UDP message sent (10 bytes):\n\n"
        "SIP/2.0 180 Ringing\nCall-ID: c1\n\n"
    )
    received, sent = parse_message_log(text)
    assert (received.direction, received.method, received.header("call-id")) == (
        "received", "INVITE", "c1")  # fmt: skip
    assert received.body.startswith("v=0")
    assert (sent.direction, sent.status, sent.method) == ("sent", 180, None)


def test_free_ports_are_distinct() -> None:
    ports = {free_udp_port() for _ in range(5)}
    media = free_media_port()
    assert len(ports) >= 4 and media % 2 == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_a_namespaces_sipp_ports_are_no_ephemeral_ports_and_bind_together() -> None:
    """A port the kernel hands out (a bind to port 0) is one of the namespace's ephemeral
    ports: the next such pick, or any client socket there, could take it before SIPp binds
    it ("Address already in use", rarely).  A namespace's SIPp ports come from below that
    range, in turn, each checked free there: all of them bind at once."""
    with Topology() as net:
        carrier = Host(net.carrier, net.wan.name)
        ephemeral = subprocess.run(net.wan.argv("cat", "/proc/sys/net/ipv4/ip_local_port_range"),
                                   capture_output=True, text=True, check=True).stdout
        picks: list[int] = []
        for _ in range(20):
            media = carrier.free_media_port()
            picks += [carrier.free_udp_port(), media, media + 2]

        def bind_all() -> None:
            with contextlib.ExitStack() as held:
                for port in picks:
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind((net.carrier, port))

        net.wan.call(bind_all)
    assert len(set(picks)) == len(picks)
    assert max(picks) < int(ephemeral.split()[0]), (picks, ephemeral)


def test_dtmf_pcap_gives_each_key_a_new_event(tmp_path: Path) -> None:
    """Sequence numbers always rise and each key has its own, later RTP timestamp."""
    seconds = write_dtmf_pcap(tmp_path / "dtmf.pcap", "7741")
    data = (tmp_path / "dtmf.pcap").read_bytes()
    assert 0.5 < seconds < 2
    events: list[tuple[int, int, int]] = []  # (seq, timestamp, event)
    offset = 24
    while offset < len(data):
        length = struct.unpack("<I", data[offset + 8 : offset + 12])[0]
        rtp = data[offset + 16 + 42 : offset + 16 + length]
        seq, timestamp = struct.unpack(">HI", rtp[2:8])
        events.append((seq, timestamp, rtp[12]))
        offset += 16 + length
    seqs = [e[0] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    starts = sorted({(e[1], e[2]) for e in events})
    assert [event for _, event in starts] == [7, 7, 4, 1]


def test_ensure_devices_makes_character_devices(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "urandom").write_text("not a device")
    ensure_devices(tmp_path)
    for name, (major, minor) in DEVICES.items():
        st = (tmp_path / "dev" / name).stat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(major, minor)
