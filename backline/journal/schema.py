"""The journal's schema as numbered migrations, shared by every backend.

Each migration is applied once, in order, inside a transaction, and recorded in
``schema_version``; a database newer than this code is refused rather than misread.
``{autoid}`` is the backend's auto-increment primary key type.
"""

from __future__ import annotations


def _nanp(column: str, prefix: int) -> str:
    """SQL true when ``column`` is ``prefix`` characters, then a North American number of 10
    bare digits (area code and exchange not starting with 0 or 1), as backline.core.e164 has it.
    Written with substr and IN only: the same on SQLite and PostgreSQL (no GLOB, no regex)."""
    def digit(position: int, lowest: int) -> str:
        allowed = ", ".join(f"'{d}'" for d in range(lowest, 10))
        return f"substr({column}, {prefix + position}, 1) IN ({allowed})"
    return " AND ".join([f"length({column}) = {prefix + 10}"]
                        + [digit(i, 2 if i in (1, 4) else 0) for i in range(1, 11)])


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the foundation
        """CREATE TABLE attempts (
            id {autoid},
            key TEXT NOT NULL UNIQUE,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            mode TEXT NOT NULL,
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            outcome TEXT NOT NULL,
            text TEXT NOT NULL DEFAULT '',
            file TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '',
            node TEXT NOT NULL DEFAULT '',
            delivery TEXT NOT NULL
        )""",
        "CREATE INDEX attempts_at ON attempts (at)",
        "CREATE INDEX attempts_delivery ON attempts (delivery, id)",
        """CREATE TABLE mode_changes (
            id {autoid},
            mode TEXT NOT NULL,
            at TEXT NOT NULL,
            by_whom TEXT NOT NULL,
            via TEXT NOT NULL,
            reason TEXT NOT NULL
        )""",
        """CREATE TABLE audit_log (
            id {autoid},
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL
        )""",
    ),
    (  # 2: backup alerts and their links
        # One row per gathered alert.  `closed` turns 1 when a delivery of it is first picked
        # up for sending: from then on no attempt joins it, so what a recipient was told about
        # is what the page lists.
        """CREATE TABLE alerts (
            id {autoid},
            created_at TEXT NOT NULL,
            due_at TEXT NOT NULL,
            window_seconds INTEGER NOT NULL,
            closed INTEGER NOT NULL DEFAULT 0
        )""",
        # The primary key on attempt_id: an attempt is listed on one alert, however often
        # the controller is told about it (a retried webhook, a re-imported CDR, a restart).
        """CREATE TABLE alert_attempts (
            attempt_id INTEGER NOT NULL PRIMARY KEY REFERENCES attempts (id),
            alert_id INTEGER NOT NULL REFERENCES alerts (id)
        )""",
        "CREATE INDEX alert_attempts_alert ON alert_attempts (alert_id, attempt_id)",
        # One row per alert and recipient: the unit that is sent, retried and marked sent.
        # `claimed_until` is a lease, so that two controllers on one journal do not both send.
        """CREATE TABLE alert_deliveries (
            id {autoid},
            alert_id INTEGER NOT NULL REFERENCES alerts (id),
            channel TEXT NOT NULL,
            recipient TEXT NOT NULL,
            message_id TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL,
            tries INTEGER NOT NULL DEFAULT 0,
            next_try_at TEXT NOT NULL,
            claimed_until TEXT NOT NULL DEFAULT '',
            last_error TEXT NOT NULL DEFAULT '',
            sent_at TEXT NOT NULL DEFAULT '',
            UNIQUE (alert_id, channel, recipient)
        )""",
        "CREATE INDEX alert_deliveries_due ON alert_deliveries (state, next_try_at)",
        # A link is stored as the SHA-256 of its token: the journal (and its backups) cannot
        # open a page.  Each email try mints its own link, since the token is never kept.
        """CREATE TABLE alert_links (
            id {autoid},
            alert_id INTEGER NOT NULL REFERENCES alerts (id),
            delivery_id INTEGER NOT NULL REFERENCES alert_deliveries (id),
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""",
    ),
    (  # 3: delivery to the practice's inbox, and email held in an outage
        # An email taken in by the SMTP listener, exactly as it came (base64 text rather than
        # a binary column: every backend stores TEXT the same way).  It is in the journal,
        # fsynced, before the sender hears 250.
        """CREATE TABLE held_emails (
            id {autoid},
            received_at TEXT NOT NULL,
            mail_from TEXT NOT NULL,
            rcpt_to TEXT NOT NULL,
            data_b64 TEXT NOT NULL
        )""",
        # One row per item owed to the inbox: a held attempt (`attempt_id`) or a held email
        # (`email_id`).  `item_key` is the idempotency key the inbox sees on every try, so a
        # retry after an inbox that committed and then dropped the connection is harmless.
        # Items go out in (received_at, id) order; `state` is held, delivered or failed.
        """CREATE TABLE inbox_items (
            id {autoid},
            item_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            attempt_id INTEGER UNIQUE REFERENCES attempts (id),
            email_id INTEGER UNIQUE REFERENCES held_emails (id),
            received_at TEXT NOT NULL,
            state TEXT NOT NULL,
            tries INTEGER NOT NULL DEFAULT 0,
            next_try_at TEXT NOT NULL DEFAULT '',
            last_error TEXT NOT NULL DEFAULT '',
            accepted_at TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX inbox_items_queue ON inbox_items (state, received_at, id)",
        # One drain at a time across controllers sharing the journal, or the order breaks:
        # whoever holds this lease (until `lease_until`) is the one sending.
        """CREATE TABLE inbox_lease (
            name TEXT NOT NULL PRIMARY KEY,
            holder TEXT NOT NULL,
            lease_until TEXT NOT NULL
        )""",
        "INSERT INTO inbox_lease (name, holder, lease_until) VALUES ('drain', '', '')",
    ),
    (  # 4: the outage SMS auto-reply, one per SMS attempt, as a delivery of its own
        # `state`: pending (not tried yet), failed (the last try failed: `detail` says why,
        # due again at `next_try_at`), sent, not-sent (final: `detail` says why).  Leased
        # with `claimed_until` like an alert delivery, so one controller sends it, once.
        # `detail` never holds a number or a text; the reply's text is the config's.
        """CREATE TABLE sms_replies (
            id {autoid},
            attempt_id INTEGER NOT NULL UNIQUE REFERENCES attempts (id),
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            tries INTEGER NOT NULL DEFAULT 0,
            next_try_at TEXT NOT NULL,
            claimed_until TEXT NOT NULL DEFAULT '',
            sent_at TEXT NOT NULL DEFAULT '',
            message_sid TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX sms_replies_due ON sms_replies (state, next_try_at)",
    ),
    (  # 5: what each running controller last reported, for the CLI and the status page
        # One row per controller process (`holder`, as the drain lease names it), rewritten
        # when what it reports changes and every few seconds meanwhile (`seen_at`): the CLI
        # waits on `pbx_switch` to say when a switch is in effect, and says plainly when no
        # controller has been seen lately.  A switch is named by its mode and time.
        """CREATE TABLE controllers (
            holder TEXT NOT NULL PRIMARY KEY,
            node TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            mode_switch TEXT NOT NULL,
            pbx_switch TEXT NOT NULL,
            pbx_at TEXT NOT NULL,
            inbox_blocked TEXT NOT NULL
        )""",
    ),
    (  # 6: emergency calls and their on-site notices (Kari's Law)
        # One row per 911 call a desk phone placed, keyed by the PBX's call id: told by the
        # PBX at once, or found in its call record after the controller was away; either
        # way recorded once.  Who, which phone and where are kept as they were at the time.
        """CREATE TABLE emergency_calls (
            id {autoid},
            key TEXT NOT NULL UNIQUE,
            at TEXT NOT NULL,
            desk_phone TEXT NOT NULL,
            dialled TEXT NOT NULL,
            who TEXT NOT NULL,
            location TEXT NOT NULL,
            late INTEGER NOT NULL DEFAULT 0,
            node TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX emergency_calls_at ON emergency_calls (at)",
        # One row per call and person told (email, sms, a desk phone): sent once, retried
        # until it goes, leased to one controller at a time like alert deliveries.
        """CREATE TABLE emergency_notices (
            id {autoid},
            call_id INTEGER NOT NULL REFERENCES emergency_calls (id),
            channel TEXT NOT NULL,
            recipient TEXT NOT NULL,
            state TEXT NOT NULL,
            tries INTEGER NOT NULL DEFAULT 0,
            next_try_at TEXT NOT NULL,
            claimed_until TEXT NOT NULL DEFAULT '',
            last_error TEXT NOT NULL DEFAULT '',
            sent_at TEXT NOT NULL DEFAULT '',
            UNIQUE (call_id, channel, recipient)
        )""",
        "CREATE INDEX emergency_notices_due ON emergency_notices (state, next_try_at)",
    ),
    (  # 7: outside parties in E.164, the sender as it came kept beside it
        # A carrier that sent 10 national digits filed the caller as another party than the
        # same number in E.164.  Rows recorded before this keep what came in sender_raw and
        # get the E.164 sender new rows get (backline.core.records.filed), for the North
        # American 10 and 11 digit forms; other spellings stay as they are.
        "ALTER TABLE attempts ADD COLUMN sender_raw TEXT NOT NULL DEFAULT ''",
        "UPDATE attempts SET sender_raw = sender",
        f"UPDATE attempts SET sender = '+1' || sender WHERE {_nanp('sender', 0)}",
        f"UPDATE attempts SET sender = '+' || sender WHERE substr(sender, 1, 1) = '1' "
        f"AND {_nanp('sender', 1)}",
    ),
    (  # 8: the admins' override of the practice's hours (*26 closed, *27 open): who, when,
        # from where; the newest row holds until the next scheduled change after its ``at``.
        """CREATE TABLE hours_overrides (
            id {autoid},
            state TEXT NOT NULL,
            at TEXT NOT NULL,
            by_whom TEXT NOT NULL,
            via TEXT NOT NULL
        )""",
    ),
    (  # 9: people added to one conversation (number, party) alone: who is in it now, and
        # every addition and removal (who, when, from where), whose count and newest id tell
        # a running controller that its copy is out of date.
        """CREATE TABLE conversation_members (
            number TEXT NOT NULL,
            party TEXT NOT NULL,
            user_id TEXT NOT NULL,
            added_at TEXT NOT NULL,
            added_by TEXT NOT NULL,
            via TEXT NOT NULL,
            PRIMARY KEY (number, party, user_id)
        )""",
        """CREATE TABLE conversation_changes (
            id {autoid},
            at TEXT NOT NULL,
            by_whom TEXT NOT NULL,
            via TEXT NOT NULL,
            action TEXT NOT NULL,
            number TEXT NOT NULL,
            party TEXT NOT NULL,
            user_id TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        )""",
    ),
    (  # 10: what happened to a call after it was answered: a desk phone transferred it (who,
        # how, to whom, what was decided), keyed by the call's attempt key.
        """CREATE TABLE call_handling (
            id {autoid},
            call_key TEXT NOT NULL,
            at TEXT NOT NULL,
            by_user TEXT NOT NULL,
            action TEXT NOT NULL,
            note TEXT NOT NULL
        )""",
        "CREATE INDEX call_handling_key ON call_handling (call_key, id)",
    ),
    (  # 11: how much of the journal a held email takes (its stored text), on its small
        # queue row: the email intake's budget sums it without reading any message.
        "ALTER TABLE inbox_items ADD COLUMN size INTEGER NOT NULL DEFAULT 0",
        "UPDATE inbox_items SET size = (SELECT length(e.data_b64) FROM held_emails e "
        "WHERE e.id = inbox_items.email_id) WHERE kind = 'email'",
    ),
    (  # 12: refused requests on the public listener, counted per minute and source (the
        # first of each minute is in audit_log in full); audit_log pruned by age.
        """CREATE TABLE refusals (
            minute TEXT NOT NULL,
            source TEXT NOT NULL,
            action TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (minute, source, action)
        )""",
        "CREATE INDEX audit_log_at ON audit_log (at)",
    ),
    (  # 13: wrong outage PINs per desk phone since its last right one, and its lockout: kept
        # here so that a controller restart does not give a PIN guesser a fresh set of tries.
        """CREATE TABLE pin_records (
            desk_phone TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            locked_until TEXT
        )""",
    ),
    (  # 14: texts staff send from practice numbers (backline.journal.texts), one per the
        # caller's idempotency `key`: who, from which number, to whom, the text (patient data,
        # kept as an inbound SMS's text is), our sending `state` and `detail` (why, in words),
        # the lease (`claimed_until`, `claimed_by`), and the gateway's `message_sid` and
        # `delivery` status from its signed status callbacks.
        """CREATE TABLE staff_texts (
            id {autoid},
            key TEXT NOT NULL UNIQUE,
            at TEXT NOT NULL,
            user_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            tries INTEGER NOT NULL DEFAULT 0,
            next_try_at TEXT NOT NULL,
            claimed_until TEXT NOT NULL DEFAULT '',
            claimed_by TEXT NOT NULL DEFAULT '',
            sent_at TEXT NOT NULL DEFAULT '',
            message_sid TEXT NOT NULL DEFAULT '',
            delivery TEXT NOT NULL DEFAULT '',
            delivery_at TEXT NOT NULL DEFAULT '',
            error_code TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX staff_texts_due ON staff_texts (state, next_try_at)",
        "CREATE INDEX staff_texts_sid ON staff_texts (message_sid)",
    ),
    (  # 15: voicemail emails (a member who opted in is told of a message, with a link and
        # nothing of the caller): one row per message and member, sent once, retried until it
        # goes, leased like alert deliveries; and each try's link, kept only as its hash.
        """CREATE TABLE voicemail_emails (
            id {autoid},
            attempt_id INTEGER NOT NULL REFERENCES attempts (id),
            user_id TEXT NOT NULL,
            recipient TEXT NOT NULL,
            state TEXT NOT NULL,
            tries INTEGER NOT NULL DEFAULT 0,
            next_try_at TEXT NOT NULL,
            claimed_until TEXT NOT NULL DEFAULT '',
            last_error TEXT NOT NULL DEFAULT '',
            sent_at TEXT NOT NULL DEFAULT '',
            UNIQUE (attempt_id, user_id)
        )""",
        "CREATE INDEX voicemail_emails_due ON voicemail_emails (state, next_try_at)",
        """CREATE TABLE voicemail_links (
            id {autoid},
            email_id INTEGER NOT NULL REFERENCES voicemail_emails (id),
            attempt_id INTEGER NOT NULL REFERENCES attempts (id),
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""",
    ),
    (  # 16: retention (backline.core.retention): when Backline's copies of an attempt's files
        # were removed, and after how many days of the inbox having it; the row itself stays.
        "ALTER TABLE attempts ADD COLUMN pruned_at TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE attempts ADD COLUMN pruned_days INTEGER NOT NULL DEFAULT 0",
    ),
    (  # 17: desk phones whose last encrypted ring was refused (backline.core.srtp_refusals),
        # by name alone: kept so that a controller restart does not drop ops' warning until
        # the phone is rung again.  A phone that answers encrypted, or a reload, removes it.
        "CREATE TABLE encryption_refusals (desk_phone TEXT PRIMARY KEY)",
    ),
)

LATEST = len(MIGRATIONS)
