# Asterisk for Backline: Debian unstable's Asterisk 22, the same packages that
# backline/localpbx/pbxroot.py installs into the local root (tests/test_containers.py keeps
# the two lists equal).  Its configuration is what `backline render` wrote into the shared
# volume /etc/backline/pbx (compose.yaml's `render` service); see asterisk-entrypoint.sh.
FROM debian:sid-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      asterisk asterisk-modules asterisk-core-sounds-en-wav \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/log/asterisk/cdr-csv \
 && chown -R asterisk:asterisk /var/log/asterisk /var/spool/asterisk

COPY docker/asterisk-entrypoint.sh /usr/local/bin/backline-asterisk

# SIP (UDP and TCP), RTP and UDPTL (T.38): the ranges docker/backline.yaml gives Asterisk.
EXPOSE 5060/udp 5060/tcp 10000-10199/udp 4000-4039/udp

ENTRYPOINT ["/usr/local/bin/backline-asterisk"]
