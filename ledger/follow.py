"""A replica that follows the chain live: every block published on the chain's block topic is
verified and appended (``bpcv chain follow``). An auditor's node, or a ledger-only node on a device.

It holds no key, so it does not ask for missing ranges: a block whose parent it lacks is counted
and dropped (start it from a copy of a replica, or before the first round, to hold everything).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter

from bpcv.mqtt import BrokerAddress, Bus
from bpcv.topics import Topics
from ledger.node import ChainNode
from ledger.replica import Replica

log = logging.getLogger(__name__)


def follow(
    replica: Replica,
    broker: BrokerAddress,
    topics: Topics,
    client_id: str,
    stop: threading.Event,
    seconds: float | None = None,
) -> Counter[str]:
    """Append the blocks that arrive until ``stop`` is set or ``seconds`` pass; returns counts by outcome
    (head, side, reorg, duplicate, unknown-parent, invalid)."""
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    node = ChainNode(replica, topics, lambda: bus)
    bus = Bus(client_id, broker, lambda t, p: inbox.put((t, p)), node.subscriptions())
    bus.connect()
    deadline = None if seconds is None else time.monotonic() + seconds
    log.info("following chain %s at height %d on %s", replica.state.chain_id, replica.height, broker.url())
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                topic, payload = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            height = replica.height
            try:
                node.handle(topic, topics.parse(topic), payload)
            except Exception:  # one bad message must never stop the follower
                log.exception("handling a message on %s failed", topic)
            if replica.height != height:
                log.info(
                    "chain %s at height %d, head %s", replica.state.chain_id, replica.height, replica.head_hash[:16]
                )
    finally:
        bus.close()
    return node.outcomes
