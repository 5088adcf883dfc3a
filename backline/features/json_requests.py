"""The JSON bodies and refusals of the token APIs on the status listener (the conversation
API and the texting API): one reading of a request body, bounded before and after it is
read, so that neither API can be handed more than its limit or a body that is not an
object."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


async def json_object(request: web.Request, limit: int) -> dict[str, Any]:
    """REQUEST's body as a JSON object of at most LIMIT bytes: 413 past it, 400 if it is not
    JSON or not an object (an empty body reads as {})."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    # request.read(), not request.content: a listener's middleware may have read the body
    # already (backline.features.listeners), and aiohttp keeps it for read().
    raw = await request.read()
    if len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw))
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise web.HTTPBadRequest() from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest()
    return body


def refusal(status: int, why: str) -> web.Response:
    """A refusal the caller can read: the HTTP status and why, never the request's data."""
    return web.json_response({"refused": why}, status=status)
