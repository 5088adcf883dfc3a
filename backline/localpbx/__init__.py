"""A PBX on this machine: the chroot root Asterisk runs from, its instance supervisor, and the
rendered configuration written for a local Asterisk or FreeSWITCH (`backline up`, the tests)."""
