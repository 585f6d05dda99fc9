"""Command handlers that live outside the session class: each takes the session it serves."""
