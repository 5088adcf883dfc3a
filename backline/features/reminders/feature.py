"""The outage reminders as a feature (see :mod:`backline.features.seam`)."""

from __future__ import annotations

from backline.features.reminders.service import OutageReminders, reminders_for
from backline.features.seam import Background, Context


class Reminders(Background[OutageReminders]):
    """The reminders are ``service``."""


def build(context: Context) -> Reminders | None:
    """While an outage stays engaged, a reminder every ``backup.reminder_hours``; None when
    no reminder can go (logged)."""
    reminders = reminders_for(context.directory, context.journal, context.clock, context.mode,
                              context.changed)
    return Reminders(reminders) if reminders is not None else None
