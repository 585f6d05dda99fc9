"""The sans-IO Kademlia core: routing, lookups and the wire, with no sockets and no clock reads.

Everything here takes ``now`` as an argument and returns decisions or bytes, so a thousand nodes
can run in one process under a simulated clock and network, and the same code runs on UDP
through the thin adapter in :mod:`dht.node`.
"""
