"""Block validation rules, pure: given the chain state so far, is this block the valid next one?

A round block must: extend the head; carry a correct Merkle root; be signed by its proposer; hold
only transactions signed by registered members of the right role for its task and round; hold the
round's result from the task's coordinator and exactly the votes that result lists; and its
proposer must be the proof-of-quality winner recomputed from those votes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bpcv.envelope import Envelope, open_envelope
from bpcv.errors import BpcvError, Rejected
from bpcv.identity import Registry, verify_signature
from bpcv.poq import quality_scores, rank_nodes
from bpcv.task import TaskSpec
from ledger.block import ZERO_HASH, Block, merkle_root
from ledger.errors import InvalidBlock

TX_ROLES = {"task": ("requester",), "vote": ("agent",), "result": ("coordinator",)}


@dataclass
class ChainState:
    """What validation needs to know about the chain so far."""

    chain_id: str
    registry: Registry
    params: dict[str, Any]
    height: int
    head_hash: str
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    rounds: set[tuple[str, int]] = field(default_factory=set)


def _fail(block: Block, reason: str) -> InvalidBlock:
    return InvalidBlock(block.height, reason)


def _check_frame(block: Block, expected_height: int, prev_hash: str) -> None:
    if block.height != expected_height:
        raise _fail(block, f"height {block.height}, expected {expected_height}")
    if block.prev_hash != prev_hash:
        raise _fail(block, f"previous hash {block.prev_hash[:16]}… does not match {prev_hash[:16]}…")
    if merkle_root(list(block.txs)) != block.merkle_root:
        raise _fail(block, "Merkle root does not match the transactions")


def validate_genesis(block: Block) -> ChainState:
    """Check a genesis block (self-consistent, signed by its admin) and return the initial state."""
    _check_frame(block, 0, ZERO_HASH)
    if len(block.txs) != 1:
        raise _fail(block, "genesis must hold exactly one transaction")
    try:
        from bpcv.envelope import decode

        env = decode(block.txs[0])
        registry = Registry.from_body(env.body["members"])
        chain_id = str(env.body["chain"])
        params = dict(env.body.get("params", {}))
    except (BpcvError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _fail(block, f"genesis transaction unreadable: {exc}") from exc
    if env.type != "genesis":
        raise _fail(block, f"genesis transaction has type {env.type!r}")
    try:
        open_envelope(block.txs[0], registry, roles=("admin",))
    except Rejected as exc:
        raise _fail(block, f"genesis transaction: {exc}") from exc
    _check_proposer_signature(block, registry, roles=("admin",))
    return ChainState(chain_id, registry, params, 0, block.hash)


def _check_proposer_signature(block: Block, registry: Registry, roles: tuple[str, ...]) -> None:
    member = registry.get(block.proposer)
    if member is None:
        raise _fail(block, f"proposer {block.proposer!r} is not a registered member")
    if member.role not in roles:
        raise _fail(block, f"proposer {block.proposer} has role {member.role}, expected {'/'.join(roles)}")
    if not verify_signature(member.public_key, block.header_bytes, block.signature):
        raise _fail(block, f"proposer signature of {block.proposer} does not verify")


def vote_scores(vote: Envelope, registry: Registry) -> dict[str, float]:
    """The scores of a vote, checked: registered agent targets, finite numbers."""
    scores = vote.body.get("scores")
    if not isinstance(scores, dict):
        raise Rejected("malformed", "vote without scores")
    out: dict[str, float] = {}
    for target, score in scores.items():
        member = registry.get(target)
        if member is None or member.role != "agent":
            raise Rejected("malformed", f"vote scores unknown node {target!r}")
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise Rejected("malformed", f"vote score for {target} is not a finite number")
        out[target] = float(score)
    return out


def validate_round_block(block: Block, state: ChainState) -> tuple[TaskSpec, Envelope]:
    """Check a round block against ``state``; return its task and result. Raises InvalidBlock."""
    _check_frame(block, state.height + 1, state.head_hash)
    _check_proposer_signature(block, state.registry, roles=("agent",))
    envs: dict[str, list[Envelope]] = {"task": [], "vote": [], "result": []}
    for i, raw in enumerate(block.txs):
        try:
            env = open_envelope(raw, state.registry)
        except Rejected as exc:
            raise _fail(block, f"transaction {i}: {exc}") from exc
        if env.type not in TX_ROLES:
            raise _fail(block, f"transaction {i}: type {env.type!r} not allowed in a round block")
        if state.registry.get(env.sender).role not in TX_ROLES[env.type]:  # type: ignore[union-attr]
            raise _fail(block, f"transaction {i}: {env.type} from {env.sender}, who may not send it")
        if env.task != block.task:
            raise _fail(block, f"transaction {i} is for task {env.task!r}, block is for {block.task!r}")
        envs[env.type].append(env)

    task = state.tasks.get(block.task)
    if envs["task"]:
        if task is not None or len(envs["task"]) > 1:
            raise _fail(block, f"task {block.task} recorded twice")
        try:
            task = TaskSpec.from_body(envs["task"][0].body)
        except BpcvError as exc:
            raise _fail(block, f"task transaction: {exc}") from exc
        if task.task_id != block.task:
            raise _fail(block, "task transaction names another task")
    if task is None:
        raise _fail(block, f"task {block.task} is not on the chain")
    if (block.task, block.round) in state.rounds:
        raise _fail(block, f"round {block.round} of {block.task} is already on the chain")

    if len(envs["result"]) != 1:
        raise _fail(block, f"expected one round result, found {len(envs['result'])}")
    result = envs["result"][0]
    if result.sender != task.coordinator or result.round != block.round:
        raise _fail(block, "result is not from the task's coordinator for this round")

    votes: dict[str, dict[str, float]] = {}
    for vote in envs["vote"]:
        if vote.round != block.round:
            raise _fail(block, f"vote of {vote.sender} is for round {vote.round}, block is round {block.round}")
        if vote.sender in votes:
            raise _fail(block, f"two votes from {vote.sender}")
        try:
            votes[vote.sender] = vote_scores(vote, state.registry)
        except Rejected as exc:
            raise _fail(block, f"vote of {vote.sender}: {exc}") from exc
    listed = result.body.get("votes")
    if not isinstance(listed, list) or sorted(listed) != sorted(v.digest for v in envs["vote"]):
        raise _fail(block, "the votes in the block are not exactly those the result lists")

    ranking = rank_nodes(quality_scores(votes, task.quality_rule), task.metric)
    if not ranking:
        raise _fail(block, "no scored node: a round block needs votes")
    if result.body.get("ranking") != ranking:
        raise _fail(block, f"result ranking {result.body.get('ranking')} differs from the votes' {ranking}")
    if block.proposer != ranking[0] or result.body.get("proposer") != ranking[0]:
        raise _fail(block, f"proposer {block.proposer} is not the PoQ winner {ranking[0]}")
    eliminated = result.body.get("eliminated")
    if result.body.get("eliminated_reason") == "lowest-quality" and eliminated != ranking[-1]:
        raise _fail(block, f"eliminated {eliminated} is not the lowest-quality node {ranking[-1]}")
    return task, result


def apply_round_block(state: ChainState, block: Block, task: TaskSpec) -> None:
    """Advance ``state`` past a block that validated."""
    state.tasks.setdefault(task.task_id, task)
    state.rounds.add((block.task, block.round))
    state.height = block.height
    state.head_hash = block.hash
