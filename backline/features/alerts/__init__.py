"""Backup alerts: who is told of an attempt taken in outage mode, by email and SMS."""
