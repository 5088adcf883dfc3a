"""The pure core: the directory, who owns and may use what, routing, outage mode, attempt
records, fax and emergency policy.  No I/O, no clock reads, no await; imports nothing outside
itself (tests/test_layers.py)."""
