"""Bounded, linear MIME analysis of untrusted messages (pure: no I/O, no asyncio).

``analyse(raw)`` computes the tree once (at delivery, off the event loop); the result is
stored via ``MessageStructure.encode`` and read back with ``decode`` for FETCH and SEARCH.
"""

from mailnode.mime.model import Address, Envelope, MessageStructure, Params, Part
from mailnode.mime.structure import MAX_DEPTH, MAX_PARTS, analyse

__all__ = ["MAX_DEPTH", "MAX_PARTS", "Address", "Envelope", "MessageStructure", "Params",
           "Part", "analyse", "structure_blob"]


def structure_blob(raw: bytes) -> bytes:
    """What the store keeps beside a message's bytes (computed once, when it arrives)."""
    return analyse(raw).encode()
