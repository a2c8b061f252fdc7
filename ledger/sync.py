"""Range sync: a replica that is behind asks for the blocks it is missing.

The request is a signed envelope (type ``sync``, body ``{"from": height}``) on the requester's own
sync topic; an answering replica publishes its blocks from that height on, in order, to the
requester's ``.../blocks`` topic. Nothing received is trusted: every block is re-verified on append.
"""

from __future__ import annotations

from ledger.replica import Replica

MAX_BLOCKS_PER_ANSWER = 256


def blocks_from(replica: Replica, start: int, limit: int = MAX_BLOCKS_PER_ANSWER) -> list[bytes]:
    """The raw blocks ``start`` .. head (at most ``limit``), for answering a sync request."""
    if start < 1:
        start = 1
    end = min(replica.height, start + limit - 1)
    return [replica.store.get(h) or b"" for h in range(start, end + 1)]
