"""How features send: SMTP, retry backoff and delivery rounds, shared by alerts, reminders
and emergency notices."""
