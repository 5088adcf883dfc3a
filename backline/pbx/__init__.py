"""The PBX ports both drivers implement (ports.py) and the call path they share (inbound.py);
the drivers live in asterisk/ and freeswitch/ beneath, and never import each other."""
