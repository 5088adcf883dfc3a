"""Backline's telephony core: the practice directory, routing, outage mode, and the PBX drivers.

The modules directly in this package are pure (no sockets, no clock reads, no ``await``);
the drivers live in ``telephony.asterisk`` and ``telephony.freeswitch``.
"""
