"""Voicemail emails: members who opted in hear of each message by a link, never its audio."""
