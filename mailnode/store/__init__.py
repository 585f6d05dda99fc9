"""Local storage: mailboxes, messages, outbound queue and keys in one SQLite file."""
