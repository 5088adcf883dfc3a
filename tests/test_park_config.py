"""The ``park:`` section as ``backline check`` reads it: defaults, and each mistake (a code
someone else dials, a malformed range, a timeout out of bounds) named with file, line and
field; the rendered Asterisk files for it."""

from __future__ import annotations

from pathlib import Path

from backline.app import config
from backline.core.model import Park
from backline.render.asterisk import AsteriskSecrets, render

from .test_config import check, expected_marks, parse_problems

BASE = """\
practice: {name: Park Clinic, timezone: America/Chicago}
users:
  - {id: ana, name: Ana, email: ana@x.example, extension: "101", desk_phones: [ana-desk],
     emergency_callback: "+13125550100"}
  - {id: bob, name: Bob, email: bob@x.example, extension: "702", desk_phones: [bob-desk],
     emergency_callback: "+13125550100"}
teams:
  - {id: desk, name: Desk, members: [ana], extension: "800"}
numbers:
  - {number: "+13125550100"}
connections:
  pbx:
    kind: asterisk
    ami: {host: 127.0.0.1, port: 5038, username: backline, secret_env: X_AMI}
    agi: {host: 127.0.0.1, port: 4573}
  storage: {url: "sqlite:///tmp/never-created.db"}
"""

BROKEN = BASE + """\
park:
  extension: "800"  #! park.extension: 800 is team desk's extension
  slots: "701-703"  #! park.slots: 702 is user bob's extension
  timeout: 0  #! park.timeout: a whole number from 1 to 3600
  music: jazz  #! park.music: one of
"""

MORE_BROKEN = [
    ('park: {slots: "703-701"}', "park.slots", "a range like 701-708"),
    ('park: {slots: "70-701"}', "park.slots", "a range like 701-708"),
    ('park: {slots: "100-200"}', "park.slots", "at most 50 slots"),
    ('park: {slots: "910-912"}', "park.slots", "911 is the emergency number 911"),
    ('park: {extension: "750", slots: "749-752"}', "park.slots",
     "slots apart from the park extension"),
    ('park: {extension: "*8"}', "park.extension", "digits like 700"),
]


def test_park_defaults(tmp_path: Path) -> None:
    path = tmp_path / "park.yaml"
    path.write_text(BASE.replace('extension: "702"', 'extension: "102"') + "park: {}\n")
    assert config.load(path).directory.park == Park(
        "700", ("701", "702", "703", "704", "705", "706", "707", "708"), 45)
    path.write_text(BASE + 'park: {slots: "711-713", timeout: 30}\n')
    assert config.load(path).directory.park == Park("700", ("711", "712", "713"), 30)
    path.write_text(BASE)
    assert config.load(path).directory.park is None  # no section: no parking


def test_every_park_mistake_is_named_where_it_is(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = check(path)
    assert result.returncode == 2, result.stdout
    problems = parse_problems(result.stderr)
    for file, line, field, words in expected_marks(BROKEN, str(path)):
        hits = [p for p in problems if p[:3] == (file, line, field)]
        assert hits, f"no problem reported at {file}:{line} {field}; got:\n{result.stderr}"
        assert any(words.lower() in p[3].lower() for p in hits), (words, hits)
    for section, field, words in MORE_BROKEN:
        path.write_text(BASE + section + "\n")
        result = check(path)
        assert result.returncode == 2, section
        (problem,) = [p for p in parse_problems(result.stderr) if p[2] == field]
        assert words in problem[3], (section, problem)


def test_park_is_refused_with_freeswitch(tmp_path: Path) -> None:
    path = tmp_path / "fs.yaml"
    text = BASE.replace("""    kind: asterisk
    ami: {host: 127.0.0.1, port: 5038, username: backline, secret_env: X_AMI}
    agi: {host: 127.0.0.1, port: 4573}
""", "    kind: freeswitch\n    esl: {host: 127.0.0.1, port: 8021, password_env: X_ESL}\n")
    path.write_text(text + "park: {}\n")
    result = check(path)
    assert result.returncode == 2
    assert any(p[2] == "park" and "Asterisk only" in p[3]
               for p in parse_problems(result.stderr)), result.stderr


def test_the_rendered_dialplan_parks_picks_up_and_rings_back(tmp_path: Path) -> None:
    path = tmp_path / "park.yaml"
    path.write_text(BASE + 'park: {slots: "711-712", timeout: 30}\n')
    d = config.load(path).directory
    files = {f.name: f.text for f in render(d, AsteriskSecrets("s", {
        "ana-desk": "a", "bob-desk": "b"}), "/snd/announcement")}
    dialplan = files["extensions.conf"]
    desk = dialplan.split("[backline-desk]")[1].split("\n[")[0]
    transfer = dialplan.split("[backline-transfer]")[1].split("\n[")[0]
    park = "exten => 700,1,NoOp(park)\n same => n,Park(default,s)"
    assert park in desk and park in transfer
    for slot in ("711", "712"):
        assert f"exten => {slot},hint,park:{slot}@backline-parked" in desk
        assert f"exten => {slot},1,ParkedCall(default,{slot})" in desk
    # Explicit extensions come before the outbound pattern in the file too.
    assert desk.index("Park(default,s)") < desk.index("exten => _[*+0-9].")
    lot = files["res_parking.conf"]
    assert "parkpos=711-712" in lot and "parkingtime=30" in lot
    assert "comebackcontext=backline-park-timeout" in lot
    assert "[backline-park-timeout]" in dialplan
    assert "entry=/snd/hold-music" in files["musiconhold.conf"]
    # Without a park: section nothing parks.
    path.write_text(BASE)
    bare = {f.name: f.text for f in render(config.load(path).directory, AsteriskSecrets(
        "s", {"ana-desk": "a", "bob-desk": "b"}), "/snd/announcement")}
    assert "Park(" not in bare["extensions.conf"] and "[default]" not in bare[
        "res_parking.conf"]
