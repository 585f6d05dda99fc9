"""The DHT node mailnode runs: :class:`dht.kad.node.DhtNode`, the sans-IO Kademlia core on UDP.

Kept as the import path mailnode uses; the node itself lives in :mod:`dht.kad.node`.
"""

from dht.kad.contact import node_id_for as node_id_of
from dht.kad.node import DhtNode, is_ip

__all__ = ["DhtNode", "is_ip", "node_id_of"]
