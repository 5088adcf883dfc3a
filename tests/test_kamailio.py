"""Kamailio in front of several PBX nodes (dialplan/kamailio.py), on a real Kamailio.

Here the nodes are SIPp UASes that answer and hang up, standing in for Asterisk nodes: what is
shown is the dispatcher configuration itself.  Calls from a SIPp carrier are spread over both
nodes; with one node killed every further call is still answered, by the other.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dialplan.kamailio import Node, dispatcher_list
from telephony.model import HostPort
from tests.harness.kamailio import Kamailio, KamailioMissing, answering_node, kamailio_binary
from tests.harness.sipp import free_udp_port, place_calls

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def kamailio_installed() -> None:
    try:
        kamailio_binary()
    except KamailioMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def test_node_names_and_addresses_are_checked() -> None:
    with pytest.raises(ValueError, match="node name"):
        Node("Node 1", HostPort("127.0.0.1", 5060))
    with pytest.raises(ValueError, match="not a host"):
        Node("n1", HostPort("127.0.0.1;lr\n", 5060))
    with pytest.raises(ValueError, match="differ"):
        dispatcher_list([Node("n1", HostPort("10.0.0.1", 5060)),
                         Node("n1", HostPort("10.0.0.2", 5060))])


def test_the_rendered_config_passes_kamailios_own_check(kamailio_installed: None,
                                                        tmp_path: Path) -> None:
    nodes = [Node("node1", HostPort("10.0.0.11", 5060)), Node("node2", HostPort("10.0.0.12", 5060))]
    done = Kamailio(tmp_path, HostPort("127.0.0.1", free_udp_port()), nodes).check()
    assert done.returncode == 0, done.stderr
    assert "config file ok" in done.stderr + done.stdout


def test_calls_spread_over_both_nodes_and_survive_a_dead_node(kamailio_installed: None,
                                                              tmp_path: Path) -> None:
    node1 = answering_node(tmp_path, "node1")
    node2 = answering_node(tmp_path, "node2")
    with node1, node2, Kamailio(tmp_path / "kamailio", HostPort("127.0.0.1", free_udp_port()),
                                [Node("node1", HostPort("127.0.0.1", node1.port)),
                                 Node("node2", HostPort("127.0.0.1", node2.port))]) as kam:
        kam.start()
        proxy = ("127.0.0.1", kam.listen.port)
        first = place_calls(proxy, tmp_path, "+13125550100", from_user="+17205550141",
                            calls=10).wait(60)
        assert first.ok and first.successful == 10, kam.log()
        one, two = len(node1.invites()), len(node2.invites())
        assert (one, two) == (5, 5)  # round robin

        node1.kill()  # the node dies; Kamailio has not noticed yet
        second = place_calls(proxy, tmp_path, "+13125550100", from_user="+17205550142",
                             calls=6).wait(90)
        assert second.ok and second.successful == 6, kam.log()
        assert len(node2.invites()) == two + 6


def render(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BACKLINE_AMI_SECRET": "test-ami-secret"}
    return subprocess.run(
        [sys.executable, "-m", "telephony.cli", "render", str(ROOT / "config/example.yaml"),
         "--out", str(tmp_path / "out"), "--secrets", str(tmp_path / "secrets.json"),
         *options], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
        check=False)


def test_backline_render_writes_a_config_kamailio_accepts(kamailio_installed: None,
                                                         tmp_path: Path) -> None:
    kdir = tmp_path / "out" / "kamailio"
    done = render(tmp_path, "--kamailio", "127.0.0.1:5070", "--node", "node1=10.0.0.11:5060",
                  "--node", "node2=10.0.0.12:5060", "--kamailio-dir", str(kdir))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "extensions.conf").exists()  # the PBX config as before
    listed = (kdir / "dispatcher.list").read_text().splitlines()[1:]
    assert listed == ["1 sip:10.0.0.11:5060 0 0 duid=node1", "1 sip:10.0.0.12:5060 0 0 duid=node2"]
    binary, _ = kamailio_binary()
    check = subprocess.run([binary, "-c", "-f", str(kdir / "kamailio.cfg")],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr


def test_backline_render_refuses_a_bad_node_and_writes_no_kamailio_files(
        tmp_path: Path) -> None:
    done = render(tmp_path, "--kamailio", "127.0.0.1:5070", "--node", "node1:10.0.0.11")
    assert done.returncode == 2
    assert "--node: expected NAME=HOST:PORT" in done.stderr
    assert not (tmp_path / "out" / "kamailio").exists()
