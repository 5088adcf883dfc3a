"""Backline tests."""
