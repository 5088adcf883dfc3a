"""PBX configuration rendered from the practice directory: pure functions from config to text."""
