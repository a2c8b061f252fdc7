"""Block validation rules, pure: given the chain state so far, is this block a valid next one?

Two kinds of block follow the genesis:

- a *registration* block, proposed by an admin, holds only admin-signed ``register`` transactions,
  each admitting one new member (id, key, role);
- a *round* block, proposed by an agent, records one round of one task: the task itself (first round
  only), exactly the votes the coordinator's result lists, the result, the reward split, the final
  model (last round only), and any equivocation evidence. Its proposer must be the node at place
  ``rank`` of the round's proof-of-quality ranking, recomputed here from the included votes, skipping
  nodes excluded for equivocation (rank 0 is the winner; rank k > 0 the fallback after k timeouts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bpcv.committee import COMMITTEE_SEED_DEPTH, assign
from bpcv.envelope import Envelope, decode, open_envelope
from bpcv.errors import BpcvError, ConfigError, Rejected
from bpcv.identity import Member, Registry, verify_signature
from bpcv.messages import Evidence, Final, Genesis, Register, Result, Reward, Vote, read, read_task
from bpcv.poq import eligible_proposers, outliers, rank_nodes, round_quality, vote_scores
from bpcv.task import TaskSpec
from ledger.block import ZERO_HASH, Block, decode_header, merkle_root
from ledger.errors import CorruptStore, InvalidBlock

ROUND_TX_ROLES = {
    "task": ("requester",),
    "vote": ("agent",),
    "result": ("coordinator",),
    "reward": ("coordinator",),
    "final": ("coordinator",),
    "evidence": ("agent", "coordinator"),
}
REWARD_SLACK = 1e-6
# Block hashes the state keeps (committee seeds are checked against the last COMMITTEE_SEED_DEPTH); a fork
# switch steps back over one block per hash, and none goes this deep.
RECENT_HASHES = 64


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
    excluded: set[str] = field(default_factory=set)  # proposers proven to have equivocated
    recent: list[str] = field(default_factory=list)  # the last RECENT_HASHES block hashes, the head's last

    def copy(self) -> ChainState:
        return ChainState(
            self.chain_id,
            Registry({n: m for n in self.registry.ids() if (m := self.registry.get(n)) is not None}),
            dict(self.params),
            self.height,
            self.head_hash,
            dict(self.tasks),
            set(self.rounds),
            set(self.excluded),
            list(self.recent),
        )


@dataclass(frozen=True)
class BlockEffects:
    """What a valid block changes in the chain state."""

    new_task: TaskSpec | None = None
    round: tuple[str, int] | None = None
    members: tuple[Member, ...] = ()
    excluded: tuple[str, ...] = ()


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
        env = decode(block.txs[0])
    except Rejected as exc:
        raise _fail(block, f"genesis transaction unreadable: {exc}") from exc
    if env.type != "genesis":
        raise _fail(block, f"genesis transaction has type {env.type!r}")
    try:
        genesis = read(env, Genesis)
        registry = Registry.from_body(genesis.members)
    except (BpcvError, ValueError) as exc:
        raise _fail(block, f"genesis transaction unreadable: {exc}") from exc
    chain_id, params = genesis.chain, genesis.params
    try:
        open_envelope(block.txs[0], registry, roles=("admin",))
    except Rejected as exc:
        raise _fail(block, f"genesis transaction: {exc}") from exc
    _check_proposer_signature(block, registry, roles=("admin",))
    return ChainState(chain_id, registry, params, 0, block.hash, recent=[block.hash])


def _check_proposer_signature(block: Block, registry: Registry, roles: tuple[str, ...]) -> None:
    member = registry.get(block.proposer)
    if member is None:
        raise _fail(block, f"proposer {block.proposer!r} is not a registered member")
    if member.role not in roles:
        raise _fail(block, f"proposer {block.proposer} has role {member.role}, expected {'/'.join(roles)}")
    if not verify_signature(member.public_key, block.header_bytes, block.signature):
        raise _fail(block, f"proposer signature of {block.proposer} does not verify")


def equivocation_proof(header_a: bytes, header_b: bytes) -> str:
    """Why two headers are not one proposer's equivocation ("" when they are); content only, no signatures."""
    try:
        a, b = decode_header(header_a), decode_header(header_b)
    except CorruptStore as exc:
        return str(exc)
    if header_a == header_b:
        return "the two headers are the same block"
    if a["proposer"] != b["proposer"]:
        return "the headers have different proposers"
    if a["height"] != b["height"] or a["prev_hash"] != b["prev_hash"]:
        return "the headers are not for the same height and parent"
    return ""


def validate_evidence(env: Envelope, registry: Registry, excluded: set[str]) -> str:
    """Check an equivocation evidence transaction; return the accused proposer. Raises Rejected."""
    evidence = read(env, Evidence)
    accused = evidence.accused
    member = registry.get(accused)
    if member is None or member.role != "agent":
        raise Rejected("malformed", f"evidence accuses unknown agent {accused!r}")
    if accused in excluded:
        raise Rejected("duplicate", f"{accused} is already excluded")
    try:
        raw_headers = [bytes.fromhex(h) for h in evidence.headers]
        raw_sigs = [bytes.fromhex(s) for s in evidence.signatures]
    except (TypeError, ValueError) as exc:
        raise Rejected("malformed", f"evidence is not hex: {exc}") from exc
    why = equivocation_proof(raw_headers[0], raw_headers[1])
    if why:
        raise Rejected("malformed", f"not equivocation: {why}")
    if decode_header(raw_headers[0])["proposer"] != accused:
        raise Rejected("malformed", "the headers are not proposed by the accused")
    for header, sig in zip(raw_headers, raw_sigs, strict=True):
        if not verify_signature(member.public_key, header, sig):
            raise Rejected("bad-signature", f"an evidence header is not signed by {accused}")
    return accused


def validate_block(block: Block, state: ChainState) -> BlockEffects:
    """Check a block after the genesis against ``state``; return what it changes. Raises InvalidBlock."""
    _check_frame(block, state.height + 1, state.head_hash)
    member = state.registry.get(block.proposer)
    if member is not None and member.role == "admin":
        return _validate_registration_block(block, state)
    return _validate_round_block(block, state)


def _validate_registration_block(block: Block, state: ChainState) -> BlockEffects:
    _check_proposer_signature(block, state.registry, roles=("admin",))
    if block.task or block.round or block.rank or not block.txs:
        raise _fail(block, "a registration block has no task, round 0, rank 0 and at least one registration")
    admitted = Registry({})
    for i, raw in enumerate(block.txs):
        try:
            env = open_envelope(raw, state.registry, roles=("admin",))
            if env.type != Register.KIND:
                raise Rejected("malformed", f"type {env.type!r} in a registration block")
            registration = read(env, Register)
            new = Member(registration.node, bytes.fromhex(registration.key), registration.role)
            if new.node_id in state.registry or len(new.public_key) != 32 or new.role == "admin":
                raise Rejected("malformed", f"{new.node_id}: already a member, a key not of 32 bytes, or an admin")
            admitted.add(new)
        except (Rejected, ConfigError, ValueError) as exc:
            raise _fail(block, f"registration {i}: {exc}") from exc
    return BlockEffects(members=tuple(admitted.get(n) for n in admitted.ids()))  # type: ignore[misc]


def _validate_round_block(block: Block, state: ChainState) -> BlockEffects:
    _check_proposer_signature(block, state.registry, roles=("agent",))
    envs: dict[str, list[Envelope]] = {kind: [] for kind in ROUND_TX_ROLES}
    for i, raw in enumerate(block.txs):
        try:
            env = open_envelope(raw, state.registry)
        except Rejected as exc:
            raise _fail(block, f"transaction {i}: {exc}") from exc
        if env.type not in ROUND_TX_ROLES:
            raise _fail(block, f"transaction {i}: type {env.type!r} not allowed in a round block")
        if state.registry.get(env.sender).role not in ROUND_TX_ROLES[env.type]:  # type: ignore[union-attr]
            raise _fail(block, f"transaction {i}: {env.type} from {env.sender}, who may not send it")
        if env.type != "evidence" and env.task != block.task:
            raise _fail(block, f"transaction {i} is for task {env.task!r}, block is for {block.task!r}")
        envs[env.type].append(env)

    task = state.tasks.get(block.task)
    new_task = None
    if envs["task"]:
        if task is not None or len(envs["task"]) > 1:
            raise _fail(block, f"task {block.task} recorded twice")
        try:
            new_task = task = read_task(envs["task"][0])
        except Rejected as exc:
            raise _fail(block, f"task transaction: {exc}") from exc
        if task.task_id != block.task:
            raise _fail(block, "task transaction names another task")
    if task is None:
        raise _fail(block, f"task {block.task} is not on the chain")
    if (block.task, block.round) in state.rounds:
        raise _fail(block, f"round {block.round} of {block.task} is already on the chain")

    result_env = _check_result(block, task, envs["result"])
    try:
        result = read(result_env, Result)
    except Rejected as exc:
        raise _fail(block, f"result: {exc}") from exc
    ranking = _check_votes(block, task, envs["vote"], result, state)
    eligible = eligible_proposers(ranking, state.excluded)
    if not 0 <= block.rank < len(eligible) or eligible[block.rank] != block.proposer:
        expected = eligible[block.rank] if 0 <= block.rank < len(eligible) else "nobody"
        raise _fail(block, f"proposer {block.proposer} at rank {block.rank}, but that place is {expected}")
    _check_records(block, task, envs, result, ranking)

    excluded: list[str] = []
    for env in envs["evidence"]:
        try:
            excluded.append(validate_evidence(env, state.registry, state.excluded | set(excluded)))
        except Rejected as exc:
            raise _fail(block, f"evidence from {env.sender}: {exc}") from exc
    return BlockEffects(new_task=new_task, round=(block.task, block.round), excluded=tuple(excluded))


def _check_result(block: Block, task: TaskSpec, results: list[Envelope]) -> Envelope:
    if len(results) != 1:
        raise _fail(block, f"expected one round result, found {len(results)}")
    result = results[0]
    if result.sender != task.coordinator or result.round != block.round:
        raise _fail(block, "result is not from the task's coordinator for this round")
    return result


def _check_committees(
    block: Block, task: TaskSpec, result: Result, votes: dict[str, dict[str, float]], recent: list[str]
) -> None:
    """With validation committees, every vote scores only its voter's committee, drawn again here from the
    result's seed, which must be one of the last COMMITTEE_SEED_DEPTH block hashes below this block."""
    seed = result.committee_seed
    if not task.committee:
        if seed is not None or result.validated:
            raise _fail(block, "the result records committees, but the task has none")
        return
    if seed not in recent[-COMMITTEE_SEED_DEPTH:]:
        raise _fail(
            block, f"committee seed {str(seed)[:16]} is not one of the last {COMMITTEE_SEED_DEPTH} block hashes"
        )
    assignment = assign(result.validated, task.committee, seed, task.task_id, block.round)
    for voter, scores in sorted(votes.items()):
        if voter not in assignment:
            raise _fail(block, f"vote of {voter}, whose update the round did not validate")
        if off := sorted(set(scores) - set(assignment[voter])):
            raise _fail(block, f"vote of {voter} scores {off}, outside its committee")


def _check_votes(
    block: Block, task: TaskSpec, vote_envs: list[Envelope], result: Result, state: ChainState
) -> list[str]:
    """The votes are exactly those the result lists, well formed, each scoring its voter's committee;
    return the PoQ ranking they give."""
    registry = state.registry
    votes: dict[str, dict[str, float]] = {}
    for vote in vote_envs:
        if vote.round != block.round:
            raise _fail(block, f"vote of {vote.sender} is for round {vote.round}, block is round {block.round}")
        if vote.sender in votes:
            raise _fail(block, f"two votes from {vote.sender}")
        try:
            votes[vote.sender] = vote_scores(read(vote, Vote), registry)
        except Rejected as exc:
            raise _fail(block, f"vote of {vote.sender}: {exc}") from exc
    if sorted(result.votes) != sorted(v.digest for v in vote_envs):
        raise _fail(block, "the votes in the block are not exactly those the result lists")
    _check_committees(block, task, result, votes, state.recent)
    quality, dissenters = round_quality(votes, task.metric, task.quality_rule, task.voter_dissent)
    ranking = rank_nodes(quality, task.metric)
    if not ranking:
        raise _fail(block, "no scored node: a round block needs votes")
    if result.ranking != ranking:
        raise _fail(block, f"result ranking {result.ranking} differs from the votes' {ranking}")
    if result.dissenters != dissenters:
        raise _fail(block, f"result dissenters {result.dissenters} differ from the votes' {dissenters}")
    reason, eliminated = result.eliminated_reason, result.eliminated
    if reason == "lowest-quality" and eliminated != ranking[-1]:
        raise _fail(block, f"eliminated {eliminated} is not the lowest-quality node {ranking[-1]}")
    if reason == "outlier" and eliminated not in outliers(quality, task.metric):
        raise _fail(block, f"eliminated {eliminated} is not an outlier of the votes' quality")
    if reason == "dissenting-voter" and eliminated not in dissenters:
        raise _fail(block, f"eliminated {eliminated} did not dissent in this round")
    return ranking


def _check_records(
    block: Block, task: TaskSpec, envs: dict[str, list[Envelope]], result: Result, ranking: list[str]
) -> None:
    """The reward split (every round) and the final model (last round only) are the ones the result lists."""
    records = envs["reward"] + envs["final"]
    if sorted(result.records) != sorted(r.digest for r in records):
        raise _fail(block, "the reward/final records in the block are not exactly those the result lists")
    if any(r.sender != task.coordinator or r.round != block.round for r in records):
        raise _fail(block, "a reward/final record is not from the task's coordinator for this round")
    if len(envs["reward"]) != 1:
        raise _fail(block, f"expected one reward record, found {len(envs['reward'])}")
    try:
        rewards = read(envs["reward"][0], Reward).rewards
        final_records = [read(env, Final) for env in envs["final"]]
    except Rejected as exc:
        raise _fail(block, f"record: {exc}") from exc
    if not all(n in ranking and v >= 0 for n, v in rewards.items()):
        raise _fail(block, "rewards must be non-negative numbers for ranked nodes")
    if any(rewards.get(n, 0) > 0 for n in result.dissenters):
        raise _fail(block, "a dissenting voter is paid")
    if sum(rewards.values()) > task.reward_per_round * (1 + REWARD_SLACK) + REWARD_SLACK:
        raise _fail(block, f"rewards {sum(rewards.values())} exceed the task's {task.reward_per_round} per round")
    if len(final_records) != int(result.final):
        raise _fail(block, "a final-model record belongs in exactly the final round")
    if result.final and final_records[0].model_digest != result.global_digest:
        raise _fail(block, "the final model digest differs from the round's global model")


def apply_block(state: ChainState, block: Block, effects: BlockEffects) -> None:
    """Advance ``state`` past a block that validated."""
    if effects.new_task is not None:
        state.tasks[effects.new_task.task_id] = effects.new_task
    if effects.round is not None:
        state.rounds.add(effects.round)
    for member in effects.members:
        state.registry.add(member)
    state.excluded.update(effects.excluded)
    state.height = block.height
    state.head_hash = block.hash
    state.recent = [*state.recent, block.hash][-RECENT_HASHES:]


def unapply_block(state: ChainState, block: Block, effects: BlockEffects) -> None:
    """Step ``state`` back over its head block (the inverse of ``apply_block``), for fork switches."""
    if effects.new_task is not None:
        del state.tasks[effects.new_task.task_id]
    if effects.round is not None:
        state.rounds.discard(effects.round)
    state.registry.remove(*(m.node_id for m in effects.members))
    state.excluded.difference_update(effects.excluded)
    state.height = block.height - 1
    state.head_hash = block.prev_hash
    state.recent = [h for h in state.recent if h != block.hash]
