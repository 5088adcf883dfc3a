"""The static arm of bench.calls: the test practice's rendered dialplan with the carrier
context's question to the controller replaced by ``Set()`` steps writing what the controller
would answer for the bench's number, so that the only difference between the arms is the
controller.  Pure, but for make_static(), which loads it into a running Asterisk."""

from __future__ import annotations

import re
from collections.abc import Sequence

from backline.core.connections import AsteriskPbx
from backline.core.decisions import InboundCall, RingDeskPhones
from backline.core.model import Directory
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations
from backline.core.routing import route_inbound
from backline.localpbx.instance import AsteriskInstance
from backline.localpbx.ports import LOOPBACK
from backline.pbx.asterisk.commands import inbound_variables, packed
from backline.pbx.asterisk.dialplan_variables import CARRIER_CONTEXT
from bench.pbx_setup import ANSWERS, CARRIER_USER, BenchError

NUMBER = "+13125550101"  # Dr. Ana Lee's direct line; the nurses (mia) are its members


def contact(login: str, port: int) -> str:
    """The Contact a harness registration gives Asterisk (tests/harness/sipp/register.xml)."""
    return f"sip:{login}@{LOOPBACK}:{port}"


def ring_variables(directory: Directory, phones: Sequence[tuple[str, str, int]]
                   ) -> list[tuple[str, str]]:
    """The variables the controller sets for a call to NUMBER when PHONES are registered.

    PHONES: (desk phone, login, contact port), in registration order.  Raises BenchError
    unless the decision is to ring desk phones.
    """
    book = OwnershipBook(directory)
    registrations = Registrations(book, directory.max_per_login)
    for at, (phone, login, port) in enumerate(phones):
        registrations.register(phone, contact(login, port), float(at))
    pbx = directory.connections.pbx
    assert isinstance(pbx, AsteriskPbx)
    decision = route_inbound(book, registrations, InboundCall(NUMBER, CARRIER_USER),
                             Mode.NORMAL, pbx.ring_seconds)
    if not isinstance(decision, RingDeskPhones):
        raise BenchError(f"a call to {NUMBER} would not ring desk phones: {decision}")
    return inbound_variables(decision, book)


# The carrier context's one question to the controller (with its arguments, whatever they are).
AGI_STEP = re.compile(r"^ same => n,AGI\(\$\{BACKLINE_AGI\}/inbound[,)].*\n", re.MULTILINE)
# What a Set() value in extensions.conf may hold without quoting: no ';' (a comment), ','
# (an argument separator), '$' or '[' (expressions), no spaces.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_/:@.&+*#=^-]*")


def static_dialplan(extensions_conf: str, variables: Sequence[tuple[str, str]]) -> str:
    """The rendered extensions.conf with the carrier context's AGI step replaced by a
    ``Set()`` of VARIABLES, packed as the controller sends them, and AGISTATUS=SUCCESS so the
    next step takes the decision.

    Raises BenchError if the carrier context does not have exactly one such AGI step, or a
    value could not be written plainly.
    """
    head, sep, rest = extensions_conf.partition(f"[{CARRIER_CONTEXT}]\n")
    context, sep2, tail = rest.partition("\n[")
    if not sep or len(AGI_STEP.findall(context)) != 1:
        raise BenchError(f"no single `AGI(${{BACKLINE_AGI}}/inbound...)` in [{CARRIER_CONTEXT}]")
    name, value = packed(list(variables))  # the one variable the controller would set
    if not _PLAIN_VALUE.fullmatch(value) or not re.fullmatch(r"[A-Z_]+", name):
        raise BenchError(f"cannot write {name}={value!r} into a static dialplan")
    sets = f" same => n,Set({name}={value})\n"
    sets += " same => n,Set(AGISTATUS=SUCCESS)\n"
    context = AGI_STEP.sub(lambda _: sets, context)
    return head + sep + context + sep2 + tail



def make_static(instance: AsteriskInstance, variables: Sequence[tuple[str, str]]) -> None:
    """Rewrite the running instance's extensions.conf by static_dialplan() and reload it;
    raise BenchError unless Asterisk's carrier context then has no AGI step left."""
    path = instance.host_path(instance.dir("etc")) / "extensions.conf"
    path.write_text(static_dialplan(path.read_text(), variables))
    instance.cli("dialplan reload")
    shown = instance.cli(f"dialplan show {CARRIER_CONTEXT}")
    if "AGI(" in shown or "Set(BACKLINE_DECISION=" not in shown:
        raise BenchError(f"the static dialplan did not load:\n{shown}")


def answerer(directory: Directory) -> str:
    """The extension of the answering phone's user: what the answer's PAI must name."""
    user = next(u for u in directory.users if u.id == ANSWERS[1])
    if not user.extension:
        raise BenchError(f"{ANSWERS[1]} has no extension to recognise the answer by")
    return user.extension
