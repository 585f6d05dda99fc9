"""Pure cryptography for mailnode: identities, addresses, signatures, sealed envelopes.

No I/O, no asyncio and no clock reads: anything time-dependent takes ``now`` as an argument.
"""
