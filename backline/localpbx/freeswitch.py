"""`backline render` for ``kind: freeswitch``: the XML files, the announcement audio and the
desk-phone provisioning list, written into one directory. The I/O around
:mod:`backline.render.freeswitch` (which stays pure)."""

from __future__ import annotations

from pathlib import Path

from backline.core.connections import FreeswitchPbx
from backline.core.model import Directory
from backline.core.voicemail import voicemail_boxes
from backline.localpbx.announcement import (
    render_announcement,
    render_closed_clips,
    render_greeting_clips,
)
from backline.localpbx.output import write_render
from backline.localpbx.phone_secrets import load_or_create
from backline.pbx.freeswitch import cdr
from backline.render.asterisk import RenderedFile
from backline.render.freeswitch import FreeswitchSecrets, render
from backline.render.freeswitch_voicemail import voicemail_file

VOICEMAIL_KEY_PREFIX = "voicemail-box-"


def render_files(directory: Directory, secrets_path: Path, announcement: str
                 ) -> list[RenderedFile]:
    """The rendered files; desk-phone and voicemail-box secrets and the call record's row
    token generated once, kept in ``secrets_path`` (0600) and stable across renders."""
    phones = [p for u in directory.users if u.active for p in u.desk_phones]
    boxes = voicemail_boxes(directory)
    kept = load_or_create(secrets_path, [*phones, *(VOICEMAIL_KEY_PREFIX + b for b in boxes),
                                         cdr.TOKEN_KEY])
    secrets = FreeswitchSecrets({p: kept[p] for p in phones},
                                {b: kept[VOICEMAIL_KEY_PREFIX + b] for b in boxes},
                                kept[cdr.TOKEN_KEY])
    return [*render(directory, secrets, announcement), voicemail_file()]


def write_rendered(directory: Directory, pbx: FreeswitchPbx, out: Path,
                   secrets_path: Path) -> int:
    """Write everything into ``out``; return how many files were written."""
    out.mkdir(parents=True, exist_ok=True)
    wav = out / "announcement.wav"
    render_announcement(directory.backup.announcement, wav, Path(directory.source).parent)
    clips = render_closed_clips(directory, out)
    greetings = render_greeting_clips(directory, out)  # beside it, as the dialplan names them
    files = render_files(directory, secrets_path, str(wav))
    return write_render(out, files, directory, str(pbx.sip), secrets_path,
                        sip_user_is_login=False) + 1 + len(clips) + len(greetings)  # + audio
