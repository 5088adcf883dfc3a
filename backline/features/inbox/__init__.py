"""Inbox delivery: attempts posted to the practice's inbox endpoint (service.py), the payload
(payload.py, pure) and the backlog watch (progress.py)."""
