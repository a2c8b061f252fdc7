"""Proof-of-quality proposing: which round block this node writes, when, and with which transactions.

After a round's result, the node at place k of the eligible PoQ ranking (``bpcv.poq``) proposes the
round's block: at once for k = 0, after k block timeouts for a stand-in, unless the block came in the
meantime. The block holds, in this order: the task (first round of a task on this chain only), the
votes the result lists (sorted by digest), the result, its reward/final records (sorted by digest),
and evidence of any equivocation this replica saw whose proposer the chain has not excluded yet.
Votes travel to the coordinator and, on request, to the proposer: a node that is to propose asks for
the round's votes (``fetch``) when it starts. A listed vote or record that has not arrived is waited
for a while, then the proposal is given up (a stand-in will write the block).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bpcv.envelope import Envelope
from bpcv.messages import Result, seal_message
from bpcv.poq import eligible_proposers
from bpcv.task import TaskSpec
from ledger.node import ChainNode

log = logging.getLogger(__name__)
Later = Callable[..., None]  # later(delay_s, fn, *args): run fn(*args) on the owner's worker after delay_s
Fetch = Callable[[int], None]  # fetch(round): have the round's votes sent to this node (they come to keep())


class RoundProposer:
    """Collects a task's round transactions and proposes the round blocks this node is entitled to."""

    def __init__(self, chain: ChainNode, later: Later, wait_s: float, fetch: Fetch) -> None:
        self.chain = chain
        self._later = later
        self._fetch = fetch
        self.wait_s = wait_s  # how long to wait for listed transactions that have not arrived
        self.round_txs: dict[int, dict[str, bytes]] = {}  # round -> digest -> raw envelope
        self.pending: dict[int, tuple[Envelope, Result, int]] = {}  # round -> (result, body, my PoQ place)
        self._task: TaskSpec | None = None
        self._task_raw = b""

    def start_task(self, task: TaskSpec, task_raw: bytes) -> None:
        """Propose for ``task`` from now on (``task_raw`` is the requester's signed task envelope)."""
        self._task, self._task_raw = task, task_raw
        self.round_txs, self.pending = {}, {}

    def forget_before(self, round_no: int) -> None:
        """Drop what older rounds left (round ``round_no`` started; the previous round's block may still be
        to propose: the coordinator starts a round while the block of the one before is written)."""
        self.round_txs = {r: v for r, v in self.round_txs.items() if r >= round_no - 1}
        self.pending = {r: p for r, p in self.pending.items() if r >= round_no - 1}

    def keep(self, round_no: int, digest: str, raw: bytes) -> None:
        """A transaction a round block may need (a vote, a reward/final record)."""
        self.round_txs.setdefault(round_no, {})[digest] = raw
        if round_no in self.pending:
            self._try_propose(round_no, final=False)

    def on_result(self, result_env: Envelope, result: Result) -> None:
        """The coordinator's result of a round: propose its block if this node's PoQ place says so."""
        task, node = self._task, self.chain.identity
        assert task is not None and node is not None
        eligible = eligible_proposers(result.ranking, self.chain.replica.state.excluded)
        if node.node_id not in eligible[: task.proposer_fallbacks + 1]:
            return
        rank = eligible.index(node.node_id)
        if rank == 0:
            self._start(result_env, result, rank)
        else:  # stand in for a silent proposer after ``rank`` timeouts, unless the block came meanwhile
            self._later(rank * task.block_timeout_s, self._start, result_env, result, rank)

    def _start(self, result_env: Envelope, result: Result, rank: int) -> None:
        assert self._task is not None
        if self.chain.replica.has_round(self._task.task_id, result_env.round):
            return
        self.pending[result_env.round] = (result_env, result, rank)
        self._fetch(result_env.round)
        if not self._try_propose(result_env.round, final=False):
            self._later(self.wait_s, self._try_propose, result_env.round, True)

    def _try_propose(self, round_no: int, final: bool) -> bool:
        """Propose once every listed vote and record is here (or, when ``final``, give up without them).
        Returns False while it is still waiting."""
        task = self._task
        assert task is not None
        if round_no not in self.pending:
            return True
        if self.chain.replica.has_round(task.task_id, round_no):
            del self.pending[round_no]
            return True
        result_env, result, rank = self.pending[round_no]
        have = self.round_txs.get(round_no, {})
        missing = [d for d in result.votes + result.records if d not in have]
        if missing and not final:
            return False
        del self.pending[round_no]
        if missing:
            log.error("cannot propose round %d: %d listed transactions never arrived", round_no, len(missing))
            return True
        self.chain.propose(task.task_id, round_no, rank, self._block_txs(round_no, result_env, result, have))
        return True

    def _block_txs(self, round_no: int, result_env: Envelope, result: Result, have: dict[str, bytes]) -> list[bytes]:
        assert self._task is not None and self.chain.identity is not None
        replica, task_id = self.chain.replica, self._task.task_id
        txs = [] if task_id in replica.state.tasks else [self._task_raw]
        txs += [have[d] for d in sorted(result.votes)] + [result_env.raw] + [have[d] for d in sorted(result.records)]
        txs += [
            seal_message(self.chain.identity, e.evidence(), task_id, round_no).raw for e in replica.pending_evidence()
        ]
        return txs
