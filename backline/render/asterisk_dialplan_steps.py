"""The steps every context of the rendered dialplan shares: reading a variable, asking the
controller over FastAGI, carrying out its decision.  Pure."""

from __future__ import annotations

from backline.pbx.asterisk import dialplan_variables as v


def var(name: str) -> str:
    """``${NAME}``: a variable's value, as the dialplan reads it."""
    return f"${{{name}}}"


def agi(script: str, *args: str) -> str:
    """An AGI step asking the controller's ``script`` (arguments already filtered)."""
    return f"AGI({var(v.AGI_URL)}/{script},{','.join(args)})"


def decided_action() -> str:
    """The decision's action, read straight from the packed decision."""
    return f"${{CUT({v.DECISION},{v.FIELD_SEPARATOR},{v.FIELDS.index(v.ACTION) + 1})}}"


def _action_alone() -> str:
    """The decision as it reads when it carries its action and no other field (``announce``,
    ``fax``: packed with every other field empty)."""
    i = v.FIELDS.index(v.ACTION)
    return (v.FIELD_SEPARATOR * i + decided_action()
            + v.FIELD_SEPARATOR * (len(v.FIELDS) - 1 - i))


def decided(fallback: str, told: str = "") -> str:
    """After an AGI step: carry out the decision, or ``fallback`` (a Goto target) if none
    came back, after the dialplan application ``told`` (if any) has said so.

    A decision that is its action alone (an outage's announcement, a fax) goes straight to
    its context in the same step: unpacked, it would cost Asterisk eleven more steps a call
    (a channel snapshot, a CDR update and an AMI event each; bench/outage.py), and its
    context reads no field.  Any other is cut into its variables first."""
    alone = (f'${{IF($["{var(v.DECISION)}" = "{_action_alone()}"]'
             f"?{v.CONTEXT_PREFIX}{decided_action()},s,1:decided)}}")
    return (f' same => n,GotoIf($["${{AGISTATUS}}" = "SUCCESS" & "{var(v.DECISION)}" != ""]'
            f"?{alone})\n"
            + (f" same => n,{told}\n" if told else "")
            + f" same => n,Goto({fallback})\n"
            f" same => n(decided),Gosub({v.UNPACK_CONTEXT},s,1)\n"
            f" same => n,Goto({v.CONTEXT_PREFIX}{var(v.ACTION)},s,1)")
