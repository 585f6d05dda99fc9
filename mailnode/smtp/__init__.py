"""SMTP submission: our own sans-IO dialogue (``protocol``) behind an asyncio adapter
(``server``) on the node's event loop; ``replies`` holds what it says."""
