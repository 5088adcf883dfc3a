"""The notices that an outage has started and has ended."""
