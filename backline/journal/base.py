"""The journal: every store over one connection.

The journal is the durable record every feature writes; each consumer's SQL is a store of its
own (``attempts``, ``modes``, ``hours``, ``controllers``, ``audit``, ``alerts``, ``delivery``,
``replies``, ``emergency``, ``conversations``, ``pins``, ``texts``, ``voicemail``,
``retention``, ``srtp_refusals``), all on :class:`~backline.journal.store.SqlStore`.
Backends differ only in how they connect, their placeholder and their auto-increment type.
"""

from __future__ import annotations

import backline.journal.schema as schema
from backline.journal.alerts import AlertJournal
from backline.journal.attempts import AttemptJournal
from backline.journal.audit import AuditJournal
from backline.journal.controllers import ControllerJournal
from backline.journal.conversations import CallHandlingJournal, ConversationJournal
from backline.journal.delivery import InboxJournal
from backline.journal.emergency import EmergencyJournal
from backline.journal.hours import HoursJournal
from backline.journal.modes import ModeJournal
from backline.journal.pins import PinJournal
from backline.journal.replies import ReplyJournal
from backline.journal.retention import RetentionJournal
from backline.journal.srtp_refusals import EncryptionRefusalJournal
from backline.journal.store import JournalError
from backline.journal.texts import TextJournal
from backline.journal.voicemail import VoicemailJournal


class SqlJournal(AttemptJournal, ModeJournal, HoursJournal, ControllerJournal, AuditJournal,
                 AlertJournal, InboxJournal, ReplyJournal, EmergencyJournal,
                 ConversationJournal, CallHandlingJournal, PinJournal, TextJournal,
                 VoicemailJournal, RetentionJournal, EncryptionRefusalJournal):
    """Every store over one DB-API connection; subclasses connect and commit durably."""

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        with self._lock, self._transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT MAX(version) FROM schema_version")
            current = cur.fetchone()[0] or 0
            if current > schema.LATEST:
                raise JournalError(f"the journal has schema version {current}, newer than this "
                                   f"Backline ({schema.LATEST}); upgrade Backline")
            for version in range(current + 1, schema.LATEST + 1):
                for statement in schema.MIGRATIONS[version - 1]:
                    cur.execute(statement.format(autoid=self.autoid))
                cur.execute(self._q("INSERT INTO schema_version (version) VALUES (?)"),
                            (version,))
            return schema.LATEST
