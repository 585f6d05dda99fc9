"""The Kademlia layer: signed, versioned, expiring address records and the node that serves them.

Built on the ``kademlia`` package with its known defects fixed in subclasses; it knows nothing
about mail.
"""

from dht.node import DhtNode
from dht.records import AddressRecord, RecordError, dht_key

__all__ = ["AddressRecord", "DhtNode", "RecordError", "dht_key"]
