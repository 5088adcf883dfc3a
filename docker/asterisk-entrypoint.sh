#!/bin/sh
# Start Asterisk in the foreground on the configuration `backline render` wrote.
#
# The rendered files (dial plan, PJSIP endpoints, AMI user, voicemail, CDR, parking, music on
# hold, the 911 location) replace Debian's defaults; the media port ranges come from
# RTP_START/RTP_END and UDPTL_START/UDPTL_END, which compose.yaml sets to the ranges it
# publishes and docker/backline.yaml names.
set -eu

rendered=${BACKLINE_PBX_DIR:-/etc/backline/pbx}
for f in pjsip.conf pjsip_auth.conf extensions.conf voicemail.conf cdr.conf manager.conf; do
  if [ ! -f "$rendered/$f" ]; then
    echo "backline-asterisk: $rendered/$f is missing: run \`backline render CONFIG --out $rendered\` first" >&2
    exit 1
  fi
done
# Every file render wrote, not a list kept here: which ones it writes depends on the practice
# (parking, music on hold, the 911 location, TLS), and a file left out leaves Debian's default
# in its place.  Secrets inside (AMI, desk phones): readable by Asterisk's group only.
for path in "$rendered"/*.conf; do
  install -m 0640 -o root -g asterisk "$path" "/etc/asterisk/$(basename "$path")"
done
printf '[general]\nrtpstart = %s\nrtpend = %s\n' \
  "${RTP_START:-10000}" "${RTP_END:-10199}" > /etc/asterisk/rtp.conf
printf '[general]\nudptlstart = %s\nudptlend = %s\n' \
  "${UDPTL_START:-4000}" "${UDPTL_END:-4039}" > /etc/asterisk/udptl.conf
# Asterisk's ID in each call's uniqueid: nodes sharing one journal must not collide.
if [ -n "${ASTERISK_SYSTEMNAME:-}" ]; then
  sed -i '/^;*\s*systemname\s*=/d; /^\[options\]/a systemname = '"$ASTERISK_SYSTEMNAME" \
    /etc/asterisk/asterisk.conf
fi
# The spool is shared with the controller (compose.yaml's pbx-spool volume), which moves each
# received fax's TIFF out of it: its group is the controller's (uid and gid 10001 in
# controller.Dockerfile), group-writable and inherited (setgid) by the files Asterisk writes.
spool=/var/spool/asterisk
chgrp "${CONTROLLER_GID:-10001}" "$spool"
chmod 2775 "$spool"

# Voicemail recordings and faxes are patient data: what Asterisk writes is its own and its
# group's (the controller's, through the setgid spool), never other users' (it was 0644).
umask 0007
exec /usr/sbin/asterisk -f -U asterisk -G asterisk -vvv
