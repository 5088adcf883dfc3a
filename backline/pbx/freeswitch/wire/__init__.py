"""Sans-IO codec for FreeSWITCH's Event Socket (mod_event_socket), in the style of h11.

Bytes from FreeSWITCH go into :meth:`Decoder.feed`, which returns :class:`Frame` values;
:func:`classify` turns a frame into one closed union of messages (:data:`Message`). Commands
going out are built by the encoder functions, which return bytes and refuse any argument that
could break out of its line. Nothing here touches a socket, a clock or a loop.

Three modules, one a direction of the stream, and this one names what they offer, as h11's
``__init__`` does: :mod:`.frames` (bytes in, frames out: the decoder and its limits),
:mod:`.messages` (a frame read as a message, events decoded) and :mod:`.encoders` (commands
out).

Byte formats are taken from FreeSWITCH's source, not from client libraries. References name
the function in ``src/mod/event_handlers/mod_event_socket/mod_event_socket.c`` (signalwire/
freeswitch, the copy read was commit 5a650e4c), ``src/switch_event.c`` and
``src/switch_utils.c``:

* Every frame is a block of ``Name: value`` lines ended by an empty line; only a
  ``Content-Length`` header announces a body, of exactly that many bytes.
* Envelope headers are written raw by ``snprintf``: ``Content-Type: auth/request\\n\\n``
  (``listener_run``), ``Content-Type: command/reply\\nReply-Text: %s\\n\\n`` (``listener_run``),
  ``Content-Type: api/response\\nContent-Length: %d\\n\\n`` (``api_exec``), and for events
  ``Content-Length: %d\\nContent-Type: text/event-plain\\n\\n``: Content-Length *before*
  Content-Type (``read_packet``, the ``hbuf`` format).
* An event body is ``switch_event_serialize(..., encode=SWITCH_TRUE)``: each header as
  ``name: url-encoded value\\n`` (an empty encoded value is written ``_undef_``), then either a
  lone ``\\n``, or ``Content-Length: n\\n\\n`` and an n-byte event body.
* The outbound ``connect`` answer is *not* enveloped: ``parse_command`` serializes a
  CHANNEL_DATA event whose own headers include ``Content-Type: command/reply`` and
  ``Reply-Text: +OK\\n`` (so ``Reply-Text: %2BOK%0A`` on the wire), ``Socket-Mode`` and
  ``Control``. Its header values are therefore URL-encoded, unlike every other command/reply.
"""

from backline.pbx.freeswitch.wire.encoders import (
    encode_api,
    encode_bgapi,
    encode_connect,
    encode_event_plain,
    encode_linger,
    encode_myevents,
    encode_sendevent,
    encode_sendmsg,
)
from backline.pbx.freeswitch.wire.frames import (
    MAX_CONTENT_LENGTH,
    MAX_HEADER_BYTES,
    Decoder,
    EslError,
    Frame,
    Headers,
    ProtocolError,
    header,
)
from backline.pbx.freeswitch.wire.messages import (
    ApiResponse,
    AuthRequest,
    ChannelData,
    CommandReply,
    DisconnectNotice,
    Event,
    Message,
    RudeRejection,
    UnknownFrame,
    classify,
    decode_event,
    url_decode,
)

__all__ = [
    "MAX_CONTENT_LENGTH",
    "MAX_HEADER_BYTES",
    "ApiResponse",
    "AuthRequest",
    "ChannelData",
    "CommandReply",
    "Decoder",
    "DisconnectNotice",
    "EslError",
    "Event",
    "Frame",
    "Headers",
    "Message",
    "ProtocolError",
    "RudeRejection",
    "UnknownFrame",
    "classify",
    "decode_event",
    "encode_api",
    "encode_bgapi",
    "encode_connect",
    "encode_event_plain",
    "encode_linger",
    "encode_myevents",
    "encode_sendevent",
    "encode_sendmsg",
    "header",
    "url_decode",
]
