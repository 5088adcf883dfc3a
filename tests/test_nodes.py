"""Several PBX nodes on one journal: each names itself (``connections.pbx.node``), its
attempts carry that name, and its Asterisk runs with it as ``systemname`` so call uniqueids,
and so attempt keys, never collide between nodes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backline.app import config as config_mod
from backline.app.controller import Controller
from backline.core.connections import AsteriskPbx, HostPort
from backline.core.fax_intake import check_uniqueid
from backline.core.outage import Mode
from backline.journal import AttemptKind, Delivery, NewAttempt, Outcome, open_journal
from backline.localpbx.instance import AsteriskInstance
from backline.localpbx.pbxroot import RootError, ensure_root
from tests.harness.ports import asterisk_ports
from tests.harness.postgres import JournalBackend
from tests.test_asterisk_harness import pbx_files

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "config" / "example.yaml").read_text()


def practice(tmp_path: Path, node_line: str, storage_url: str = "") -> Path:
    text = EXAMPLE.replace("    kind: asterisk\n", f"    kind: asterisk\n{node_line}", 1)
    if storage_url:
        text = re.sub(r'storage: \{url: "[^"]*"\}', f'storage: {{url: "{storage_url}"}}', text)
    path = tmp_path / "practice.yaml"
    path.write_text(text)
    return path


def test_the_node_name_is_read_and_checked(tmp_path: Path) -> None:
    directory = config_mod.load(practice(tmp_path, "    node: node-2\n")).directory
    pbx = directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx) and pbx.node == "node-2"
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.load(practice(tmp_path, "    node: Node_2\n"))
    problems = "\n".join(map(str, caught.value.problems))
    assert "connections.pbx.node: a node name" in problems
    assert re.search(r"practice\.yaml:\d+: connections\.pbx\.node", problems)


async def test_two_controllers_on_one_journal_stamp_their_own_node(
        journal_backend: JournalBackend, tmp_path: Path) -> None:
    """Each controller's attempts carry its node, read back from the shared journal."""
    controllers = []
    for name in ("node1", "node2"):
        d = tmp_path / name
        d.mkdir()
        path = practice(d, f"    node: {name}\n", journal_backend.url)
        directory = config_mod.load(path).directory
        controllers.append(Controller(directory, open_journal(journal_backend.url)))
    for i, controller in enumerate(controllers):
        new = await controller.record_attempt(NewAttempt(
            f"call:node{i + 1}-1700000000.{i}", datetime.now(UTC), AttemptKind.CALL,
            Mode.OUTAGE, "+17205550141", "+13125550100", Outcome.ANNOUNCED,
            delivery=Delivery.HELD))
        assert new
    journal = open_journal(journal_backend.url)
    assert [(a.key, a.node) for a in journal.attempts()] == [
        ("call:node1-1700000000.0", "node1"), ("call:node2-1700000000.1", "node2")]
    for c in controllers:
        c.journal.close()
    journal.close()


@pytest.fixture
def node_instance() -> Iterator[AsteriskInstance]:
    try:
        root = ensure_root()
    except RootError as exc:
        pytest.fail(f"no Asterisk root: {exc}", pytrace=False)
    ports = asterisk_ports()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    inst = AsteriskInstance(f"t-{worker}-node-{os.getpid()}", ports, pbx_files(ports),
                            root=root, systemname="node7")
    yield inst
    inst.kill()
    inst.remove()


@pytest.mark.asterisk
def test_asterisk_runs_with_the_node_as_its_systemname(node_instance: AsteriskInstance) -> None:
    node_instance.start()
    settings = node_instance.cli("core show settings")
    assert re.search(r"System name:\s+node7\b", settings), settings
    # What Asterisk then makes of a call's uniqueid is accepted everywhere one is checked.
    assert check_uniqueid("node7-1764300000.12") == "node7-1764300000.12"
    with pytest.raises(ValueError):
        AsteriskInstance("x", node_instance.ports, systemname="node 7")


def problems_of(path: Path) -> str:
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.load(path)
    return "\n".join(map(str, caught.value.problems))


def test_a_shared_journal_requires_every_asterisk_node_to_be_named(tmp_path: Path) -> None:
    """Two unnamed nodes on one PostgreSQL journal would produce the same uniqueids, and the
    second call's attempt would be dropped as a repeat: `backline check` refuses it."""
    url = "postgresql://backline@db.maple.example:5432/backline"
    problems = problems_of(practice(tmp_path, "", url))
    assert re.search(r"practice\.yaml:\d+: connections\.pbx\.node: a node name .*required "
                     r"with a postgresql:// storage", problems), problems
    # Named, it loads; and a single node on SQLite needs no name.
    pbx = config_mod.load(practice(tmp_path, "    node: node1\n", url)).directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx) and pbx.node == "node1"
    config_mod.load(practice(tmp_path, ""))


def test_kamailio_as_the_registrar_requires_the_shared_postgresql(tmp_path: Path) -> None:
    """Its location table lives in the shared journal's database: on SQLite, `backline check`
    refuses it; on PostgreSQL the node reads where Kamailio listens."""
    line = ("    node: node1\n    registrar: {host: 10.0.0.10, port: 5070}\n"
            "    insecure_cleartext: true\n")  # phones' SIP to Kamailio off loopback
    problems = problems_of(practice(tmp_path, line))
    assert re.search(r"practice\.yaml:\d+: connections\.pbx\.registrar: a postgresql:// "
                     r"storage", problems), problems
    url = "postgresql://backline@db.maple.example:5432/backline"
    pbx = config_mod.load(practice(tmp_path, line, url)).directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx) and pbx.registrar == HostPort("10.0.0.10", 5070)


def test_required_encryption_behind_the_registrar_is_refused_by_check(tmp_path: Path) -> None:
    """The nodes reach desk phones through Kamailio over UDP: with SRTP required no phone
    would ring (tests/test_registrar_tls.py shows TLS with optional encryption)."""
    url = "postgresql://backline@db.maple.example:5432/backline"
    line = ("    node: node1\n    registrar: {host: 10.0.0.10, port: 5070}\n"
            f"    tls: {{port: 5061, practice_ca: {tmp_path}/ca}}\n    encryption: required\n"
            "    insecure_cleartext: true\n")  # behind Kamailio the phones' audio is plain
    problems = problems_of(practice(tmp_path, line, url))
    assert re.search(r"practice\.yaml:\d+: connections\.pbx\.encryption: optional behind "
                     r"Kamailio as the registrar", problems), problems
    pbx = config_mod.load(practice(tmp_path, line.replace("required", "optional"),
                                   url)).directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx) and pbx.tls is not None


def test_one_desk_phones_required_encryption_behind_the_registrar_is_refused_by_check(
        tmp_path: Path) -> None:
    """As the practice's: a phone of its own ``encryption: required`` behind Kamailio would
    never ring, and every call it placed but 911 would be refused (its SIP reaches the node
    from Kamailio, not over TLS)."""
    url = "postgresql://backline@db.maple.example:5432/backline"
    line = ("    node: node1\n    registrar: {host: 10.0.0.10, port: 5070}\n"
            f"    tls: {{port: 5061, practice_ca: {tmp_path}/ca}}\n")
    path = practice(tmp_path, line, url)
    path.write_text(path.read_text().replace(
        "desk_phones: [sam-desk]", "desk_phones: [{name: sam-desk, encryption: required}]", 1))
    problems = problems_of(path)
    assert re.search(r"practice\.yaml:\d+: users\[\d+\]\.desk_phones\[0\]\.encryption: "
                     r"optional behind Kamailio as the registrar", problems), problems


@pytest.mark.parametrize("url", [
    "postgresql://backline@db/backline?password=hunter2",
    "postgresql://backline:hunter2@db/backline",
    "postgresql://backline@db/backline?sslmode=require&password=hunter2",
])
def test_a_password_anywhere_in_the_journal_url_is_refused(tmp_path: Path, url: str) -> None:
    problems = problems_of(practice(tmp_path, "    node: node1\n", url))
    assert re.search(r"practice\.yaml:\d+: connections\.storage\.url: no password in the URL",
                     problems), problems
    assert "hunter2" not in problems


def test_a_journal_url_libpq_cannot_parse_is_refused(tmp_path: Path) -> None:
    problems = problems_of(practice(tmp_path, "    node: node1\n",
                                    "postgresql://backline@db/backline?bogus=1"))
    assert re.search(r"practice\.yaml:\d+: connections\.storage\.url: a PostgreSQL URL",
                     problems), problems
