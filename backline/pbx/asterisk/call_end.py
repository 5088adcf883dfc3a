"""The end of an unanswered call, as the dialplan reports it over FastAGI (the h extension
of ``backline-ring`` and ``backline-voicemail``, backline.render.asterisk_dialplan)."""

from __future__ import annotations

from backline.core.voicemail import call_end_from_args
from backline.pbx.asterisk.fastagi import AgiRequest, AgiSession, Handler
from backline.pbx.callpath import CallPath


def call_end_handler(path: CallPath) -> Handler:
    """The FastAGI script: the arguments are the number's voicemail box, the caller and where
    the call ended; the channel names the call in the message it left.  Nothing is sent
    back: the channel is gone."""
    async def call_end(request: AgiRequest, session: AgiSession) -> None:
        await path.take_call_end(call_end_from_args(
            request.get("uniqueid"), request.get("channel"), list(request.args)))
    return call_end
