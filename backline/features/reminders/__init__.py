"""Outage reminders: the policy (policy.py, pure) and the service that sends them."""
