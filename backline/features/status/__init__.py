"""The status page and the Prometheus metrics endpoint: a thin aiohttp shell over the journal.

``page`` renders (pure: state in, HTML or a JSON document out), ``metrics`` owns the Prometheus
registry the controller feeds, and ``server`` wires both to HTTP.  Nothing here writes to the
journal or decides anything; it shows what the journal and the controller already know.
"""
