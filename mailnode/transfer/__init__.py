"""Node-to-node transfer: hands sealed envelopes to the node a recipient's DHT record names.

TLS 1.3 with a self-signed certificate pinned to the receiving node's key, client
authentication by a signed challenge inside the channel, binary frames with streamed bodies,
and an acknowledgement only after the receiver has durably stored the message.

Layout: ``frames`` (wire codec) and ``session`` (state machines) are sans-IO; ``tls``
builds certificates and contexts; ``server`` and ``client`` are the thin asyncio adapters.
"""

from mailnode.transfer.client import TransferConnection, connect, send_message
from mailnode.transfer.server import AcceptCallback, TransferServer
from mailnode.transfer.session import (
    InboundMessage,
    Outcome,
    PinMismatchError,
    TransferError,
    Verdict,
)

__all__ = [
    "AcceptCallback",
    "InboundMessage",
    "Outcome",
    "PinMismatchError",
    "TransferConnection",
    "TransferError",
    "TransferServer",
    "Verdict",
    "connect",
    "send_message",
]
