"""Backup alerts, links, the link pages and inbox delivery."""
