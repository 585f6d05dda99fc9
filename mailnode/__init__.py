"""mailnode: the node (protocols, storage, delivery, CLI) on top of ``crypto`` and ``dht``."""
