"""The README's carrier examples (Twilio Elastic SIP Trunking and Telnyx) are configs
`backline check` accepts: each YAML block under "Connecting a carrier", put in place of the
example practice's `sip:` line, passes, so a practice copying one starts from something
valid.  The providers' own settings come from their public documentation (the README says
which); nothing here reaches a provider."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIP_LINE = "    sip: {host: 127.0.0.1, port: 5060}\n"


def _carrier_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^### Connecting a carrier\n(.*?)(?=^##)", readme,
                        re.MULTILINE | re.DOTALL)
    assert section, "README.md has no 'Connecting a carrier' section"
    return re.findall(r"```yaml\n# under connections.pbx\n(.*?)```", section.group(1),
                      re.DOTALL)


def test_the_readme_shows_two_carriers() -> None:
    hosts = [re.search(r"host: (\S+)\n", b.split("trunk:")[1]) for b in _carrier_blocks()]
    assert [h.group(1) for h in hosts if h] == ["maple-street.pstn.twilio.com",
                                                "sip.telnyx.com"]


@pytest.mark.parametrize("index", [0, 1], ids=["twilio", "telnyx"])
def test_each_carrier_example_passes_check_in_the_example_practice(
        index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = _carrier_blocks()[index]
    example = (ROOT / "config" / "example.yaml").read_text(encoding="utf-8")
    assert SIP_LINE in example
    password = tmp_path / "trunk-password"
    password.write_text("not-a-real-password\n")
    password.chmod(0o600)
    block = block.replace("/etc/backline/trunk-password", str(password))
    config = tmp_path / "practice.yaml"
    config.write_text(example.replace(SIP_LINE, block))
    monkeypatch.setenv("BACKLINE_TRUNK_PASSWORD", "not-a-real-password")
    checked = subprocess.run([sys.executable, "-m", "backline.app.cli", "check", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok:" in checked.stdout + checked.stderr
    # Both are configured encrypted end to end (SRTP too), not opted out of it.
    assert "INSECURE" not in checked.stdout + checked.stderr
    # A broken copy is refused at the trunk's line, so the check above can fail.
    broken = tmp_path / "broken.yaml"
    broken.write_text(config.read_text().replace("      tls: true\n", "      tls: maybe\n"))
    refused = subprocess.run([sys.executable, "-m", "backline.app.cli", "check", str(broken)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "trunk.tls" in refused.stdout + refused.stderr, (
        refused.stdout + refused.stderr)
