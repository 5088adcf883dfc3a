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


def decided(fallback: str, told: str = "") -> str:
    """After an AGI step: carry out the decision, or ``fallback`` (a Goto target) if none
    came back, after the dialplan application ``told`` (if any) has said so."""
    return (f' same => n,GotoIf($["${{AGISTATUS}}" = "SUCCESS" & "{var(v.DECISION)}" != ""]'
            f"?decided)\n"
            + (f" same => n,{told}\n" if told else "")
            + f" same => n,Goto({fallback})\n"
            f" same => n(decided),Gosub({v.UNPACK_CONTEXT},s,1)\n"
            f" same => n,Goto({v.CONTEXT_PREFIX}{var(v.ACTION)},s,1)")
