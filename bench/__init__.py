"""Backline benchmarks: scripts that print their figures."""
