"""The FreeSWITCH driver: Event Socket (mod_event_socket) wire codec and, later, the driver."""
