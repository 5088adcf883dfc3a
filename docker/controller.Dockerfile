# The Backline controller (`backline run`), also used once per start to `backline render` the
# Asterisk configuration into the shared volume (compose.yaml's `render` service).
FROM python:3.11-slim-bookworm

# espeak-ng and sox render the outage announcement's text to audio (`backline render`).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng sox \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/backline
COPY pyproject.toml README.md ./
COPY backline backline
# uid and gid 10001, both fixed: Asterisk's container gives the shared spool to that group
# (asterisk-entrypoint.sh), so this user can move received faxes out of it.
RUN pip install --no-cache-dir . \
 && groupadd --system --gid 10001 backline \
 && useradd --system --uid 10001 --gid backline --home-dir /var/lib/backline backline \
 && mkdir -p /var/lib/backline/fax /etc/backline/pbx \
 && chown -R backline:backline /var/lib/backline /etc/backline/pbx

COPY docker/controller-entrypoint.sh /usr/local/bin/backline-entrypoint
USER backline
ENTRYPOINT ["/usr/local/bin/backline-entrypoint"]
CMD ["run", "/etc/backline/backline.yaml"]
