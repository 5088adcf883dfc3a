"""SMS through a Twilio-format gateway: inbound webhooks in, outbound messages out.

- :mod:`backline.features.sms.twilio` is pure: the X-Twilio-Signature algorithm, the inbound
  form parsed into an :class:`~backline.features.sms.twilio.InboundSms`, the outbound Messages
  API form and answer.  No sockets, no clock, no logging.
- :mod:`backline.features.sms.webhook` is the aiohttp shell for ``POST /sms/inbound``: it
  answers 200 only after the caller has recorded the message, so a crash before that makes the
  gateway try again instead of losing the attempt.
- :mod:`backline.features.sms.gateway` sends through the Messages API with bounded retries.

Message bodies and full phone numbers never reach a log line from here: numbers are shown
through :func:`backline.core.e164.redact`, bodies not at all.
"""
