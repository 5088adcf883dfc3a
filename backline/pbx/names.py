"""The names both PBXs share: what a desk phone's feature code asks the controller, where the
mode is kept on the PBX, and what a received fax is called in the PBX's spool.

Each PBX's own constants module (``asterisk/dialplan_variables.py``, ``freeswitch/names.py``)
takes these from here, so both dialplans and both drivers spell them alike.
"""

from __future__ import annotations

from typing import Final

# The feature codes a desk phone dials, each with the action the dialplan hands the controller
# (then the PIN): engage or end the outage, force the hours closed or open until the next
# scheduled change.
ENGAGE: Final = "engage"
END: Final = "end"
HOURS_CLOSED: Final = "closed"
HOURS_OPEN: Final = "open"
ENGAGE_CODE: Final = "*28"
END_CODE: Final = "*29"
HOURS_CLOSED_CODE: Final = "*26"
HOURS_OPEN_CODE: Final = "*27"

# The mode on the PBX (AstDB family on Asterisk, mod_db realm on FreeSWITCH): what the dialplan
# answers by when the controller is away, our last agreement with it, and who switched it on
# the console and why.
MODE_FAMILY: Final = "backline"
MODE: Final = "mode"
ACK: Final = "ack"
BY: Final = "by"
REASON: Final = "reason"

# The received fax in the PBX's spool: the same name on both, so one fax intake serves both.
FAX_FILE: Final = "fax-{uuid}.tif"
