"""One DhtNode in its own process, driven line by line over stdin/stdout by a test.

``python -m tests.dht.procnode NODE_SEED_HEX PORT [HOST:PORT ...]`` starts a node on 127.0.0.1
(with the loopback limits) joined through the given addresses, prints ``ready``, then answers:

- ``publish USER_SEED_HEX`` -> ``published N`` (peers that accepted the user's record);
- ``lookup USER_KEY_HEX`` -> ``found SEQ HOST:PORT`` or ``missing``;
- ``peers`` -> ``peers`` and a JSON list of [host, port] (what mailnode saves in peers.json);
- ``quit`` (or end of input) -> stops cleanly.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from crypto.keys import Identity
from dht.node import DhtNode
from dht.records import AddressRecord
from tests.dht.support import LOOPBACK, LOOPBACK_LIMITS


async def _serve(seed: bytes, port: int, bootstrap: list[tuple[str, int]]) -> None:
    node = DhtNode(Identity(seed), limits=LOOPBACK_LIMITS, rpc_timeout=1.0,
                   bootstrap_interval=0.5)
    await node.start(LOOPBACK, port, bootstrap)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    try:
        while line := (await reader.readline()).decode().split():
            command, args = line[0], line[1:]
            if command == "quit":
                break
            if command == "publish":
                user = Identity(bytes.fromhex(args[0]))
                record = AddressRecord.create(user, bytes(32), [(LOOPBACK, port)], 1,
                                              int(time.time()) + 3600)
                print(f"published {await node.publish(record)}", flush=True)
            elif command == "lookup":
                found = await node.lookup(bytes.fromhex(args[0]))
                if found is None:
                    print("missing", flush=True)
                else:
                    host, at = found.endpoints[0]
                    print(f"found {found.seq} {host}:{at}", flush=True)
            elif command == "peers":
                print("peers " + json.dumps(node.peers()), flush=True)
    finally:
        await node.aclose()


def main(argv: list[str]) -> None:
    seed, port = bytes.fromhex(argv[0]), int(argv[1])
    bootstrap = [(host, int(p)) for host, p in (a.rsplit(":", 1) for a in argv[2:])]
    asyncio.run(_serve(seed, port, bootstrap))


if __name__ == "__main__":
    main(sys.argv[1:])
