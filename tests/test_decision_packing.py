"""A decision travels as one AGI variable that the rendered dialplan cuts apart: every field
lands in its own variable, and nothing that could shift the fields is ever sent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backline.app import config
from backline.core.connections import AsteriskPbx
from backline.core.decisions import RingExtension
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.asterisk.commands import outbound_variables, packed
from backline.pbx.ports import UnsafeValue
from backline.render.asterisk_dialplan import extensions_conf

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"


def unpack_as_the_dialplan_does(conf: str, value: str) -> dict[str, str]:
    """Apply the rendered [backline-unpack] context's CUT() steps to ``value``."""
    context = conf.split("[backline-unpack]\n", 1)[1].split("\n[", 1)[0]
    out = {}
    fields = value.split(v.FIELD_SEPARATOR)
    for name, index in re.findall(
            r"Set\((\w+)=\$\{CUT\(" + v.DECISION + r",\^,(\d+)\)\}\)", context):
        out[name] = fields[int(index) - 1] if int(index) <= len(fields) else ""
    return out


def test_every_field_comes_back_out_of_the_rendered_dialplan() -> None:
    directory = config.load(EXAMPLE).directory
    pbx = directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx)
    conf = extensions_conf(directory, pbx, "/announcement")
    decision = [(v.CALLER_ID_NUM, "+13125550100"), (v.CALLER_ID_NAME, "Maple, Street"),
                (v.DIAL_TO, "+17205550141"), (v.ACTION, v.CALL)]
    name, value = packed(decision)
    assert name == v.DECISION
    got = unpack_as_the_dialplan_does(conf, value)
    assert set(got) == set(v.FIELDS)
    assert {k: got[k] for k, _ in decision} == dict(decision)
    assert all(got[k] == "" for k in set(v.FIELDS) - {k for k, _ in decision})


def test_a_value_holding_the_separator_is_refused() -> None:
    with pytest.raises(UnsafeValue):
        packed([(v.CALLER_ID_NAME, "Maple^Street"), (v.ACTION, v.CALL)])


def test_a_variable_the_dialplan_does_not_unpack_is_refused() -> None:
    with pytest.raises(UnsafeValue):
        packed([("BACKLINE_SOMETHING_NEW", "x"), (v.ACTION, v.CALL)])


def test_a_call_to_an_extension_packs_whatever_the_callers_name_holds() -> None:
    directory = config.load(EXAMPLE).directory
    pbx = directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx)
    conf = extensions_conf(directory, pbx, "/announcement")
    decision = RingExtension("102", 'Ana "^" Lee <a\\b>, MD', "101", ("raj-desk",), ("raj",),
                             (("raj-desk", "sip:raj@10.0.0.5:5062"),), 25)
    got = unpack_as_the_dialplan_does(conf, packed(outbound_variables(decision, directory))[1])
    assert (got[v.ACTION], got[v.CALLER_ID_NUM], got[v.CALLER_ID_NAME], got[v.DIAL]) == (
        v.INTERNAL, "101", "Ana  Lee ab, MD", "PJSIP/raj-desk/sip:raj@10.0.0.5:5062")
    assert f"[backline-{v.INTERNAL}]" in conf
