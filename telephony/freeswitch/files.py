"""`backline render` for ``kind: freeswitch``: the XML files, the announcement audio and the
desk-phone provisioning list, written into one directory. The I/O around
:mod:`dialplan.freeswitch` (which stays pure)."""

from __future__ import annotations

from pathlib import Path

from dialplan.announcement import render_announcement
from dialplan.asterisk import RenderedFile
from dialplan.freeswitch import FreeswitchSecrets, render, voicemail_boxes
from dialplan.secrets import load_or_create, write_private
from telephony.model import Directory, FreeswitchPbx

VOICEMAIL_KEY_PREFIX = "voicemail-box-"


def render_files(directory: Directory, secrets_path: Path, announcement: str
                 ) -> list[RenderedFile]:
    """The rendered files; desk-phone and voicemail-box secrets generated once, kept in
    ``secrets_path`` (0600) and stable across renders."""
    phones = [p for u in directory.users if u.active for p in u.desk_phones]
    boxes = voicemail_boxes(directory)
    kept = load_or_create(secrets_path, [*phones, *(VOICEMAIL_KEY_PREFIX + b for b in boxes)])
    secrets = FreeswitchSecrets({p: kept[p] for p in phones},
                                {b: kept[VOICEMAIL_KEY_PREFIX + b] for b in boxes})
    return render(directory, secrets, announcement)


def write_rendered(directory: Directory, pbx: FreeswitchPbx, out: Path,
                   secrets_path: Path) -> int:
    """Write everything into ``out``; return how many files were written."""
    out.mkdir(parents=True, exist_ok=True)
    wav = out / "announcement.wav"
    render_announcement(directory.backup.announcement, wav, Path(directory.source).parent)
    files = render_files(directory, secrets_path, str(wav))
    for f in files:
        if f.private:
            write_private(out / f.name, f.text)
        else:
            (out / f.name).write_text(f.text)
    lines = ["desk_phone,user,sip_user,auth_user,domain,secret_file,secret_key"]
    lines += [f"{p},{u.id},{p},{p},{pbx.sip},{secrets_path},{p}"
              for u in directory.users if u.active for p in u.desk_phones]
    (out / "desk-phones.csv").write_text("\n".join(lines) + "\n")
    return len(files) + 2
