"""The outage's start and end notices as a feature (see :mod:`backline.features.seam`)."""

from __future__ import annotations

from backline.features.notices.service import OutageNotices, notices_for
from backline.features.seam import Background, Context


class Notices(Background[OutageNotices]):
    """The notices are ``service``."""


def build(context: Context) -> Notices | None:
    """A notice to the alert recipients when an outage is engaged and when it ends; None
    when none can go (logged)."""
    notices = notices_for(context.directory, context.journal, context.clock, context.changed,
                          context.record_imported)
    return Notices(notices) if notices is not None else None
