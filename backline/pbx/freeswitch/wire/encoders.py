"""Commands out: each encoder returns the bytes of one command and refuses any argument
that could break out of its line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Sending, we refuse with backline.pbx.ports.UnsafeValue (the one "we will not send this"
# error of both drivers): a CR or LF would end the command line early and let the rest be
# read as a new header or a new command (injection); a NUL truncates the C string
# FreeSWITCH copies it into.
from backline.pbx.ports import UnsafeValue


def _check(field: str, value: str, *, word: bool = False, allow_empty: bool = False) -> str:
    if not value and not allow_empty:
        raise UnsafeValue(field, value, "must not be empty")
    for bad, why in (("\r", "CR"), ("\n", "LF"), ("\0", "NUL")):
        if bad in value:
            raise UnsafeValue(field, value, f"contains {why}, which would split the command")
    if word and (" " in value or "\t" in value):
        raise UnsafeValue(field, value, "must be one word: FreeSWITCH splits at spaces")
    return value


def _check_header_value(field: str, value: str) -> str:
    _check(field, value)
    if value.startswith(" "):
        # read_packet skips spaces after the colon: the value would arrive shortened.
        raise UnsafeValue(field, value, "leading spaces would be stripped by FreeSWITCH")
    return value


def _command(line: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    text = line + "\n" + "".join(f"{name}: {value}\n" for name, value in headers) + "\n"
    return text.encode("utf-8")


def encode_api(command: str, arg: str | None = None) -> bytes:
    """``api <command> [arg]``: blocking; answered by ``api/response``, no command/reply."""
    line = "api " + _check("command", command, word=True)
    if arg is not None:
        line += " " + _check("arg", arg, allow_empty=True)
    return _command(line)


def encode_bgapi(command: str, arg: str | None = None, *, job_uuid: str | None = None) -> bytes:
    """``bgapi <command> [arg]`` with an optional ``Job-UUID`` header of our choosing.

    FreeSWITCH copies the Job-UUID into a 37-byte buffer (``switch_copy_string`` into
    ``acs->uuid_str``), silently cutting anything past 36 characters; we refuse those.
    """
    line = "bgapi " + _check("command", command, word=True)
    if arg is not None:
        line += " " + _check("arg", arg, allow_empty=True)
    headers: list[tuple[str, str]] = []
    if job_uuid is not None:
        _check_header_value("job_uuid", job_uuid)
        if len(job_uuid) > 36:
            raise UnsafeValue("job_uuid", job_uuid, "FreeSWITCH keeps only 36 characters")
        headers.append(("Job-UUID", job_uuid))
    return _command(line, headers)


def encode_event_plain(names: Sequence[str]) -> bytes:
    """``event plain NAME ...``; ``CUSTOM`` is followed by subclass names (``sofia::register``).

    Subscriptions add up: FreeSWITCH never removes names on a later ``event`` command.
    """
    if not names:
        raise UnsafeValue("names", "", "at least one event name is needed")
    return _command("event plain " + " ".join(_check("name", n, word=True) for n in names))


def encode_sendmsg(
    app: str,
    arg: str | None = None,
    *,
    uuid: str | None = None,
    event_lock: bool = False,
    event_uuid: str | None = None,
) -> bytes:
    """``sendmsg [uuid]`` with ``call-command: execute`` to run a dialplan application.

    Without ``uuid`` it acts on the socket's own channel (outbound mode). ``event_lock``
    makes FreeSWITCH finish this application before it parses the next message;
    ``event_uuid`` comes back as ``Application-UUID`` in CHANNEL_EXECUTE(_COMPLETE).
    """
    line = "sendmsg"
    if uuid is not None:
        line += " " + _check("uuid", uuid, word=True)
    headers = [
        ("call-command", "execute"),
        ("execute-app-name", _check_header_value("app", _check("app", app, word=True))),
    ]
    if arg is not None:
        headers.append(("execute-app-arg", _check_header_value("arg", arg)))
    if event_lock:
        headers.append(("event-lock", "true"))
    if event_uuid is not None:
        headers.append(("Event-UUID", _check_header_value("event_uuid", event_uuid)))
    return _command(line, headers)


def encode_connect() -> bytes:
    """``connect``: the first command on an outbound socket; answered by :class:`ChannelData`."""
    return _command("connect")


def encode_myevents(uuid: str | None = None) -> bytes:
    """``myevents [uuid]``: only events of one channel (the socket's own, outbound)."""
    if uuid is None:
        return _command("myevents")
    return _command("myevents " + _check("uuid", uuid, word=True))


def encode_linger(seconds: int | None = None) -> bytes:
    """``linger [seconds]``: keep the socket after hangup; without seconds, until the end.

    Note: on an outbound socket without ``full`` FreeSWITCH answers ``-ERR command not
    found`` (parse_command returns early for OUTBOUND && !FULL before reaching linger).
    """
    if seconds is None:
        return _command("linger")
    if seconds <= 0:
        raise UnsafeValue("seconds", str(seconds), "must be positive; omit for no limit")
    return _command(f"linger {int(seconds)}")


def encode_sendevent(name: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """``sendevent NAME`` with ``headers``: fired into FreeSWITCH's event system as if a module
    had fired it (a PRESENCE_IN lights BLF lamps through mod_sofia)."""
    checked = [(_check("header", key, word=True), _check_header_value(key, value))
               for key, value in headers]
    return _command("sendevent " + _check("name", name, word=True), checked)
