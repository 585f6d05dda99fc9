"""The Kademlia layer: signed, versioned, expiring address records and the node that serves them.

A sans-IO Kademlia core (:mod:`dht.kad`) on UDP, with node ids bound to keys and signed
datagrams; it knows nothing about mail.
"""

from dht.node import DhtNode
from dht.records import AddressRecord, RecordError, dht_key

__all__ = ["AddressRecord", "DhtNode", "RecordError", "dht_key"]
