"""Real peers for the tests: Asterisk instances, SIPp, ESL and SMTP servers."""
