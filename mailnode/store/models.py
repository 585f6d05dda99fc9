"""SQLAlchemy Core tables; Alembic migrations in ``migrations/`` are generated from these."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Named constraints from day one, so batch migrations on SQLite can alter them later.
metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("address", String(128), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    # The user's Ed25519 seed: the node signs and opens mail on the user's behalf.
    Column("identity_seed", LargeBinary(32), nullable=False),
    Column("created_at", Integer, nullable=False),
    # Sum of the sizes of the user's messages, and their number (RFC 9208 STORAGE and
    # MESSAGE): kept by triggers on ``messages`` (migration 0009), read by the quota check.
    Column("storage_used", Integer, nullable=False, server_default="0"),
    Column("message_count", Integer, nullable=False, server_default="0"),
    sqlite_autoincrement=True,
)

mailboxes = Table(
    "mailboxes", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("uidvalidity", Integer, nullable=False),
    Column("uidnext", Integer, nullable=False),
    Column("special_use", String(32), nullable=True),
    # Highest uid some session has already been told is \Recent.
    Column("recent_uid", Integer, nullable=False, server_default="0"),
    # The change feed (RFC 7162): every change to the mailbox takes the next modseq.
    Column("highest_modseq", Integer, nullable=False, server_default="1"),
    # Tombstones at or below this modseq may have been dropped (see ``expunged``): a client
    # that last synced before it is told of expunges by comparing uids, not from the list.
    Column("vanished_floor", Integer, nullable=False, server_default="0"),
    # Its messages, and those without \Seen: kept by triggers on ``messages`` (migration
    # 0010), so STATUS, SELECT and LIST read them instead of counting every message.
    Column("message_count", Integer, nullable=False, server_default="0"),
    Column("unseen_count", Integer, nullable=False, server_default="0"),
    UniqueConstraint("user_id", "name", name="uq_mailboxes_user_id_name"),
    sqlite_autoincrement=True,
)

# Message bytes, shared by every copy of the same message (several local recipients, COPY),
# with the MIME structure computed once when they arrived. Listings never read this table.
bodies = Table(
    "bodies", metadata,
    Column("id", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
    # mailnode.mime.MessageStructure.encode(); NULL (or an older format) is recomputed.
    Column("structure", LargeBinary, nullable=True),
    # mailnode.mime.headers.stored_fields(): the lines of the fields message lists ask for;
    # NULL (older mail, or an older version) is answered from the header block instead.
    Column("fields", LargeBinary, nullable=True),
    sqlite_autoincrement=True,
)

messages = Table(
    "messages", metadata,
    Column("id", Integer, primary_key=True),
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id", ondelete="CASCADE"),
           nullable=False),
    Column("uid", Integer, nullable=False),
    Column("flags", Text, nullable=False, default=""),
    Column("internaldate", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("body_id", Integer, ForeignKey("bodies.id"), nullable=False),
    # When it was put into this mailbox (RFC 8514 SAVEDATE), Unix seconds.
    Column("savedate", Integer, nullable=True),
    # The modseq of the message's last change (arrival or flags): "changed since N" is a
    # range scan of the index below, so catching up costs the changes, not the mailbox.
    Column("modseq", Integer, nullable=False, server_default="1"),
    UniqueConstraint("mailbox_id", "uid", name="uq_messages_mailbox_id_uid"),
    Index("ix_messages_body_id", "body_id"),
    Index("ix_messages_mailbox_id_modseq", "mailbox_id", "modseq"),
    sqlite_autoincrement=True,
)

# RFC 5464 annotations ("metadata") of a user's mailboxes (mailbox_id set) or of the server as
# the user sees it (mailbox_id NULL): Delta Chat keeps its push token here. Entry names are
# stored lower-cased (they are case-insensitive); one row per entry, bounded per user.
metadata_entries = Table(
    "metadata_entries", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id", ondelete="CASCADE"),
           nullable=True),
    Column("entry", String(1024), nullable=False),
    Column("value", LargeBinary, nullable=False),
    Index("ix_metadata_entries_user_id", "user_id", "mailbox_id"),
    Index("ix_metadata_entries_mailbox_id", "mailbox_id"),
    sqlite_autoincrement=True,
)

# Tombstones of expunged messages, for VANISHED (RFC 7162) and for sessions catching up.
# Kept up to a bound per mailbox; the oldest are dropped past it and ``vanished_floor``
# remembers how far, so an answer is never silently incomplete.
expunged = Table(
    "expunged", metadata,
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id", ondelete="CASCADE"),
           primary_key=True),
    Column("uid", Integer, primary_key=True),
    Column("modseq", Integer, nullable=False),
    Index("ix_expunged_mailbox_id_modseq", "mailbox_id", "modseq"),
)

# Node-wide counters that must never go backwards (UIDVALIDITY: RFC 3501 §2.3.1.1).
counters = Table(
    "counters", metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)

# Node secrets by name: "objectid" is the key MAILBOXID and EMAILID are derived with (RFC 8474).
object_keys = Table(
    "object_keys", metadata,
    Column("name", String(32), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

# IMAP subscriptions (RFC 3501 §6.3.6): names, which need not exist as mailboxes.
subscriptions = Table(
    "subscriptions", metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(255), primary_key=True),
)

# Inbound idempotency: a retried transfer of the same signed envelope is delivered once.
received = Table(
    "received", metadata,
    Column("sender_key", LargeBinary(32), primary_key=True),
    Column("message_id", LargeBinary(16), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("received_at", Integer, nullable=False),
)

# The newest address record seen for each correspondent: used when the DHT does not answer
# (the node may have been off for longer than its record lives, and come back).
known_records = Table(
    "known_records", metadata,
    Column("user_key", LargeBinary(32), primary_key=True),
    Column("record", LargeBinary, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("node_key", LargeBinary(32), nullable=False),
    Index("ix_known_records_node_key", "node_key"),
)

# A submitted message queued for remote recipients: stored once however many there are; each
# recipient's envelope is sealed from it when its turn to be sent comes.
outbound_payloads = Table(
    "outbound_payloads", metadata,
    Column("id", Integer, primary_key=True),
    Column("content", LargeBinary, nullable=False),
    # Its header block, for the delivery status notification if a recipient fails.
    Column("headers", LargeBinary, nullable=False),
    sqlite_autoincrement=True,
)

outbound = Table(
    "outbound", metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", LargeBinary(16), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("recipient", String(128), nullable=False),
    # Rows queued before payloads existed carry their sealed envelope instead.
    Column("sealed", LargeBinary, nullable=True),
    Column("payload_id", Integer, ForeignKey("outbound_payloads.id"), nullable=True),
    # Legacy rows: the submitted header block (new rows keep it in their payload).
    Column("headers", LargeBinary, nullable=True),
    Column("created_at", Integer, nullable=False),
    Column("next_attempt_at", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    # 1 once the sender was told this copy is delayed (RFC 3464 Action: delayed), so once.
    Column("delay_notified", Integer, nullable=False, server_default="0"),
    Index("ix_outbound_next_attempt_at", "next_attempt_at"),
    Index("ix_outbound_payload_id", "payload_id"),
    sqlite_autoincrement=True,
)

# Invites this node handed out (`mailnode invite`): only a hash of the one-time secret is
# kept, so a copy of the database cannot be used to befriend us.
invites = Table(
    "invites", metadata,
    Column("id", Integer, primary_key=True),
    Column("secret_hash", LargeBinary(32), nullable=False, unique=True),
    # What we hold for the friend's users once it redeems the invite.
    Column("hold_bytes", Integer, nullable=False),
    Column("hold_days", Integer, nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False),
    # The node that redeemed it (single use: a second node is refused, the same one welcomed
    # again, since its first answer may have been lost).
    Column("used_by", LargeBinary(32), nullable=True),
    sqlite_autoincrement=True,
)

# Friends' nodes: they bootstrap us, and we hold sealed mail for each other's users.
friends = Table(
    "friends", metadata,
    Column("id", Integer, primary_key=True),
    Column("node_key", LargeBinary(32), nullable=False, unique=True),
    Column("name", String(64), nullable=False, unique=True),
    # Their transfer endpoints (the DHT uses the same port numbers over UDP), JSON.
    Column("endpoints", Text, nullable=False),
    # The seq of the signed record they came from (0: from the invite or its redemption).
    Column("endpoints_seq", Integer, nullable=False, server_default="0"),
    # Set while their invite is not redeemed yet (`friend add` while they were away).
    Column("secret", LargeBinary(16), nullable=True),
    Column("invite_expires_at", Integer, nullable=True),
    # What we hold for their users, and what they agreed to hold for ours.
    Column("hold_bytes", Integer, nullable=False),
    Column("hold_days", Integer, nullable=False),
    Column("their_hold_bytes", Integer, nullable=False, server_default="0"),
    Column("their_hold_days", Integer, nullable=False, server_default="0"),
    Column("created_at", Integer, nullable=False),
    Column("last_seen", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    sqlite_autoincrement=True,
)

# Sealed envelopes held as a relay for a friend's users while their node is away. The relay
# cannot open them and does not know who sent them.
held = Table(
    "held", metadata,
    Column("id", Integer, primary_key=True),
    Column("friend_id", Integer, ForeignKey("friends.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", LargeBinary(16), nullable=False),
    Column("recipient_key", LargeBinary(32), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Column("received_at", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False),
    # The address (IPv6: /64) it came from: one address may fill at most half a friend's
    # quota, so a stranger cannot use up what a friend's correspondents need.
    Column("source", String(64), nullable=False, server_default=""),
    UniqueConstraint("recipient_key", "message_id", name="uq_held_recipient_key_message_id"),
    Index("ix_held_friend_id", "friend_id"),
    Index("ix_held_expires_at", "expires_at"),
    sqlite_autoincrement=True,
)

# What SORT, THREAD and SEARCH FROM/TO/CC/BCC/SUBJECT compare of each message
# (``mailnode.mime.sortkeys.StoredKeys``), computed once when it is stored (migration 0013):
# a SORT is one ``ORDER BY`` on an index of (mailbox, key, uid), a THREAD reads a few short
# columns, a SEARCH is an ``instr`` over them. Text keys are BLOBs of ``sortkeys.octets``
# (memcmp order = code point order). Apart from ``messages`` so that listings stay narrow;
# a trigger on ``messages`` deletes a row with its message. Clustered by (mailbox, uid)
# (WITHOUT ROWID): a THREAD or SEARCH reads a mailbox's rows in one range of the table.
# Only what message lists sort by most (arrival, date, subject, sender): every index is one
# more B-tree insert per delivered message (nine of them cost 26 us of the writer's time per
# message); SORT by another key reads the mailbox's rows of this table in SQLite's sorter
# (about 80 ms at 100,000 messages instead of 30).
_KEY_INDEXES = ("arrival", "sent", "subject", "from_addr")
message_keys = Table(
    "message_keys", metadata,
    Column("mailbox_id", Integer, primary_key=True),
    Column("uid", Integer, primary_key=True),
    Column("arrival", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("sent", Integer, nullable=False),
    Column("subject", LargeBinary, nullable=False),
    Column("reply", Integer, nullable=False),
    Column("from_addr", LargeBinary, nullable=False),
    Column("to_addr", LargeBinary, nullable=False),
    Column("cc_addr", LargeBinary, nullable=False),
    Column("display_from", LargeBinary, nullable=False),
    Column("display_to", LargeBinary, nullable=False),
    Column("message_id", LargeBinary, nullable=True),
    Column("parents", LargeBinary, nullable=False),
    Column("from_text", LargeBinary, nullable=False),
    Column("to_text", LargeBinary, nullable=False),
    Column("cc_text", LargeBinary, nullable=False),
    Column("bcc_text", LargeBinary, nullable=False),
    Column("subject_text", LargeBinary, nullable=False),
    *(Index(f"ix_message_keys_{name}", "mailbox_id", name, "uid") for name in _KEY_INDEXES),
    sqlite_with_rowid=False,
)
