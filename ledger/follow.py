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
from ledger.errors import LedgerError, UnknownParent
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
    """Append the blocks that arrive until ``stop`` is set or ``seconds`` pass; returns counts by outcome."""
    inbox: queue.Queue[bytes] = queue.Queue()
    bus = Bus(client_id, broker, lambda _t, p: inbox.put(p), [topics.block(replica.state.chain_id)])
    bus.connect()
    counts: Counter[str] = Counter()
    deadline = None if seconds is None else time.monotonic() + seconds
    log.info("following chain %s at height %d on %s", replica.state.chain_id, replica.height, broker.url())
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                payload = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                appended = replica.append(payload)
            except UnknownParent as exc:
                counts["unknown-parent"] += 1
                log.warning("block dropped: %s", exc)
                continue
            except LedgerError as exc:
                counts["invalid"] += 1
                log.warning("invalid block rejected: %s", exc)
                continue
            if appended is None:
                counts["duplicate"] += 1
            else:
                counts[appended.status] += 1
                log.info(
                    "block %d %s (%d tx), %s",
                    appended.block.height,
                    appended.status,
                    len(appended.block.txs),
                    appended.block.hash[:16],
                )
    finally:
        bus.close()
    return counts
