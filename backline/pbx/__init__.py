"""The PBX ports both drivers implement and what they share: ports.py (the fax desk, call
records, one error hierarchy), callpath.py (the call path: when a call is journaled, feature
codes, outbound calls, registration waits), inbound.py (an inbound call's decision),
mode_keys.py (the mode kept on the PBX), names.py (names both dialplans use) and fax_desk.py
(the fax intake both report to).  The drivers live in asterisk/ and freeswitch/ beneath, and
never import each other."""
