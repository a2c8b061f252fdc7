"""One replica of the chain on the network: receive, validate, append, sync, propose.

The agent, the coordinator and ``bpcv chain follow`` each compose one ``ChainNode``; none of them
touches blocks otherwise. It never trusts what arrives: every block is re-verified by the replica
before it is stored (``ledger.replica``). Handlers run on the owner's worker thread, never on the
MQTT network thread.

- **receive**: a block on the chain's block topic is appended; one whose parent this replica lacks
  means it is behind, so the block is kept (bounded) and the missing range is asked for;
- **sync**: a replica that is behind publishes a signed ``sync`` request on its own topic; a node that
  answers syncs (the coordinator) publishes the blocks from that height on to the asker's
  ``.../blocks`` topic, where they are appended in order;
- **propose**: ``propose`` signs a block of the given transactions on this replica's head, appends it
  here and publishes it; a fork switch that orphans one of our blocks for a round the new main chain
  lacks proposes it again. Which round to propose, and when, is ``ledger.proposer``'s business.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from bpcv.envelope import Envelope
from bpcv.errors import Rejected
from bpcv.identity import Identity
from bpcv.intake import Intake
from bpcv.messages import SyncRequest, read, seal_message
from bpcv.mqtt import Bus
from bpcv.topics import Topics
from ledger.block import Block, block_height, build_block
from ledger.errors import LedgerError, UnknownParent
from ledger.replica import Appended, Replica

log = logging.getLogger(__name__)
SYNC_INTERVAL_S = 5.0  # at most one sync request this often
SYNC_OVERLAP = 4  # a sync asks for a few blocks below the head too, so a fork below it is seen
MAX_FUTURE_BLOCKS = 64  # blocks beyond the head kept while the gap is filled
MAX_BLOCKS_PER_ANSWER = 256
SYNC_ROLES = ("agent", "coordinator", "requester", "admin")


class ProposalHooks:
    """What a node may do around its own proposals; the honest default does nothing. Experiments'
    attack behaviours (``edge_agent.behaviours``) override these."""

    def before_propose(self, rank: int) -> None:
        """Called just before a block is signed, with the node's PoQ place for it."""

    def after_propose(self, block: Block, txs: list[bytes], publish: Callable[[Block], None]) -> None:
        """Called after ``block`` was published; ``publish`` publishes another block (e.g. a twin)."""


class ChainNode:
    """A replica on the bus. ``identity`` None: a keyless follower (cannot ask for missing ranges)."""

    def __init__(
        self,
        replica: Replica,
        topics: Topics,
        bus_of: Callable[[], Bus],
        *,
        identity: Identity | None = None,
        intake: Intake | None = None,
        answers_sync: bool = False,
        hooks: ProposalHooks | None = None,
    ) -> None:
        self.replica = replica
        self.topics = topics
        self._bus_of = bus_of  # the owner's bus, created after this node (it needs our subscriptions)
        self.identity = identity
        self.intake = intake
        self.answers_sync = answers_sync
        self.hooks = hooks or ProposalHooks()
        self.outcomes: Counter[str] = Counter()  # appended blocks by status, and refusals by reason
        self._future_blocks: dict[int, bytes] = {}
        self._last_sync_request = -SYNC_INTERVAL_S

    @property
    def chain_id(self) -> str:
        return self.replica.state.chain_id

    def equivocators(self) -> set[str]:
        """Nodes this replica saw sign two blocks at one height, and nodes the chain excluded for it."""
        return set(self.replica.equivocations) | self.replica.state.excluded

    def subscriptions(self) -> list[str]:
        """The topics this node reads: blocks; its own sync answers; others' sync requests if it answers."""
        subs = [self.topics.block(self.chain_id)]
        if self.identity is not None:
            subs.append(self.topics.sync_blocks(self.chain_id, self.identity.node_id))
        if self.answers_sync:
            subs.append(self.topics.all_sync_requests(self.chain_id))
        return subs

    def handle(self, topic: str, levels: tuple[str, ...], payload: bytes) -> bool:
        """Handle a message on a chain topic (levels below the base); False when it is not one of ours."""
        if levels[0] != "chain" or len(levels) < 3 or levels[1] != self.chain_id:
            return False
        if levels[2:] == ("block",):
            self.receive(payload)
        elif self.identity is not None and levels[2:] == ("sync", self.identity.node_id, "blocks"):
            self.receive(payload, synced=True)
        elif self.answers_sync and len(levels) == 4 and levels[2] == "sync":
            self.answer_sync(topic, levels[3], payload)
        else:
            return False
        return True

    # receive
    def receive(self, payload: bytes, synced: bool = False) -> Appended | None:
        """Verify and append a block. A block beyond the head means this replica is behind: it is kept
        (bounded) until range sync fills the gap, and then appended in order."""
        try:
            appended = self.replica.append(payload)
        except UnknownParent as exc:
            self.outcomes["unknown-parent"] += 1
            height = block_height(payload)
            if height is not None and height > self.replica.height and len(self._future_blocks) < MAX_FUTURE_BLOCKS:
                self._future_blocks[height] = payload
            if not synced:
                log.warning("block beyond the head (%s): syncing", exc)
                self.request_sync()
            return None
        except LedgerError as exc:
            self.outcomes["invalid"] += 1
            if self.intake is not None:
                self.intake.reject(Rejected("invalid-block", str(exc)), "block")
            else:
                log.warning("invalid block rejected: %s", exc)
            return None
        if appended is None:
            self.outcomes["duplicate"] += 1
            return None
        self.outcomes[appended.status] += 1
        block = appended.block
        log.debug("block %d %s (%d tx)%s", block.height, appended.status, len(block.txs), " (sync)" * synced)
        self._repropose_orphans(appended.orphaned)
        next_block = self._future_blocks.pop(self.replica.height + 1, None)
        self._future_blocks = {h: b for h, b in self._future_blocks.items() if h > self.replica.height}
        if next_block is not None:
            self.receive(next_block, synced=True)
        return appended

    # sync
    def request_sync(self) -> None:
        """Ask for the blocks after this replica's head (at most once every SYNC_INTERVAL_S)."""
        now = time.monotonic()
        if self.identity is None or now - self._last_sync_request < SYNC_INTERVAL_S:
            return
        self._last_sync_request = now
        start = max(1, self.replica.height + 1 - SYNC_OVERLAP)
        env = seal_message(self.identity, SyncRequest(start))
        self._bus_of().publish(self.topics.sync_request(self.chain_id, self.identity.node_id), env.raw, wait=None)
        log.info("%s: asked for blocks from height %d", self.identity.node_id, start)

    def answer_sync(self, topic: str, node: str, payload: bytes) -> None:
        """Send a replica that is behind the blocks it asks for (it re-verifies each one)."""
        assert self.intake is not None, "a node that answers sync requests checks them with its intake"
        env = self.intake.open(payload, SYNC_ROLES, topic, topic_sender=node)
        if env is None:
            return
        try:
            start = read(env, SyncRequest).start
        except Rejected as exc:
            self.intake.reject(exc, topic)
            return
        blocks = self.blocks_from(start)
        for raw in blocks:
            self._bus_of().publish(self.topics.sync_blocks(self.chain_id, node), raw, wait=None)
        log.info("sync: sent %d blocks from height %d to %s", len(blocks), start, node)

    def blocks_from(self, start: int, limit: int = MAX_BLOCKS_PER_ANSWER) -> list[bytes]:
        """The raw main-chain blocks ``start`` .. head (at most ``limit``)."""
        start = max(1, start)
        end = min(self.replica.height, start + limit - 1)
        return [self.replica.store.get(h) or b"" for h in range(start, end + 1)]

    # propose
    def propose(self, task: str, round_no: int, rank: int, txs: list[bytes]) -> Block | None:
        """Sign a block of ``txs`` for ``round_no`` of ``task`` on this replica's head, as the node at PoQ
        place ``rank``; append it here and publish it. None if it does not validate here."""
        assert self.identity is not None, "a keyless follower does not propose"
        self.hooks.before_propose(rank)
        block = build_block(
            self.identity, self.replica.height + 1, self.replica.head_hash, task, round_no, txs, rank=rank
        )
        try:
            self.replica.append(block.raw)
        except LedgerError as exc:
            log.error("%s: own block for round %d does not validate: %s", self.identity.node_id, round_no, exc)
            return None
        self.publish(block)
        log.info(
            "%s: proposed block %d for round %d (PoQ rank %d)", self.identity.node_id, block.height, round_no, rank
        )
        self.hooks.after_propose(block, txs, self.publish)
        return block

    def publish(self, block: Block) -> None:
        """Publish a block on the chain's block topic."""
        self._bus_of().publish(self.topics.block(self.chain_id), block.raw)

    def republish_round(self, want: Envelope) -> None:
        """Someone lacks a round's block (a signed ``want-block``): publish it again if this replica has it."""
        block = self.replica.round_block(want.task, want.round)
        if block is not None:
            self._bus_of().publish(self.topics.block(self.chain_id), block.raw, wait=None)

    def _repropose_orphans(self, orphaned: tuple[Block, ...]) -> None:
        """Blocks of ours that a fork switch left off the main chain, for rounds it lacks: propose again."""
        if self.identity is None:
            return
        for block in orphaned:
            if block.proposer == self.identity.node_id and not self.replica.has_round(block.task, block.round):
                self.propose(block.task, block.round, block.rank, list(block.txs))
