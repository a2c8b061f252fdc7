"""Shared builders for tests: a small consortium, signed votes/results, and a round block."""

from __future__ import annotations

from dataclasses import dataclass

from bpcv.envelope import Envelope
from bpcv.identity import Identity
from bpcv.messages import Final, Result, Reward, Vote, seal_message, seal_task
from bpcv.poq import rank_nodes, round_quality
from bpcv.task import TaskSpec
from ledger.block import Block, build_block
from ledger.genesis import make_genesis


@dataclass
class Consortium:
    admin: Identity
    requester: Identity
    coordinator: Identity
    agents: dict[str, Identity]
    genesis: Block
    task: TaskSpec
    task_env: Envelope


def make_consortium(n_agents: int = 4, quality_rule: str = "mean", **task_fields: object) -> Consortium:
    admin, requester, coordinator = (Identity.generate(n) for n in ("admin", "requester", "coordinator"))
    agents = {f"node-{i:02d}": Identity.generate(f"node-{i:02d}") for i in range(1, n_agents + 1)}
    members = {
        admin.node_id: (admin.public_key, "admin"),
        requester.node_id: (requester.public_key, "requester"),
        coordinator.node_id: (coordinator.public_key, "coordinator"),
    }
    members.update({n: (a.public_key, "agent") for n, a in agents.items()})
    genesis = make_genesis(admin, "main", members)
    task = TaskSpec(
        task_id="t1", coordinator="coordinator", nodes=n_agents, min_nodes=2, quality_rule=quality_rule, **task_fields
    )
    task_env = seal_task(requester, task)
    return Consortium(admin, requester, coordinator, agents, genesis, task, task_env)


def round_block(
    c: Consortium,
    height: int,
    prev_hash: str,
    round_no: int,
    scores: dict[str, dict[str, float]],
    include_task: bool,
    proposer: str | None = None,
    rank: int = 0,
    final: bool = False,
    extra_txs: tuple[bytes, ...] = (),
    ts: float | None = None,
    rewards: dict[str, float] | None = None,
    dissenters: list[str] | None = None,
    eliminated: tuple[str, str] | None = None,
    committee: tuple[str, list[str]] | None = None,
) -> Block:
    """A block for ``round_no`` with votes ``scores[voter][target]``, a consistent result and reward split.

    The proposer is the node at place ``rank`` of the PoQ ranking unless ``proposer`` names another; the
    result names the votes' dissenters (under the task's rule) unless ``dissenters`` says otherwise, and
    eliminates the lowest-ranked node unless ``eliminated`` gives (node, reason); ``committee`` is the
    result's record of validation committees, (seed, validated nodes)."""
    votes = [seal_message(c.agents[v], Vote(s, "accuracy"), c.task.task_id, round_no) for v, s in scores.items()]
    quality, found = round_quality(scores, "accuracy", c.task.quality_rule, c.task.voter_dissent)
    ranking = rank_nodes(quality, "accuracy")
    split = {ranking[0]: 60.0, ranking[1]: 40.0} if rewards is None else rewards
    records = [seal_message(c.coordinator, Reward(split), c.task.task_id, round_no)]
    if final:
        records.append(seal_message(c.coordinator, Final("ab" * 32), c.task.task_id, round_no))
    body = Result(
        ranking=ranking,
        proposer=ranking[0],
        votes=sorted(v.digest for v in votes),
        records=sorted(r.digest for r in records),
        eliminated=eliminated[0] if eliminated else ranking[-1],
        eliminated_reason=eliminated[1] if eliminated else "lowest-quality",
        final=final,
        global_digest="ab" * 32,
        dissenters=found if dissenters is None else dissenters,
        committee_seed=committee[0] if committee else None,
        validated=committee[1] if committee else [],
    )
    result = seal_message(c.coordinator, body, c.task.task_id, round_no)
    txs = ([c.task_env.raw] if include_task else []) + [v.raw for v in votes] + [result.raw]
    txs += [r.raw for r in records] + list(extra_txs)
    who = c.agents[proposer or ranking[rank]]
    return build_block(who, height, prev_hash, c.task.task_id, round_no, txs, ts=ts, rank=rank)


def honest_scores(agents: list[str], bad: str | None = None) -> dict[str, dict[str, float]]:
    """Every agent scores every other 0.9, except ``bad`` who scores 0.1."""
    return {v: {t: (0.1 if t == bad else 0.9) - 0.01 * i for i, t in enumerate(agents) if t != v} for v in agents}


def offline_coordinator(c: Consortium, tmp, roster: list[str], shapes, chain: str = "coord-chain"):
    """A real Coordinator running ``c``'s task in round 1, not connected to any broker (messages are
    fed to its ``handle``). ``tmp`` holds the keys and genesis written by the ``consortium`` fixture."""
    from bpcv.config import CoordinatorConfig
    from coordinator.collector import RoundCollector
    from coordinator.server import Coordinator

    coord = Coordinator(
        CoordinatorConfig(
            key=str(tmp / "coordinator.key"),
            genesis=str(tmp / "genesis.bin"),
            chain_dir=str(tmp / chain),
            run_dir=str(tmp / "run"),
        )
    )
    coord.collector = RoundCollector(c.task, coord.intake, shapes)
    coord.collector.begin_round(1, list(roster))
    return coord


class FakeTrainer:
    """Stands in for TensorFlow where a test is about the protocol (real training: test_trainer_and_behaviours
    and the integration tests): training adds 0.01, every peer scores 0.5."""

    def __init__(self, shapes=((3, 2), (2,))) -> None:
        self.shapes = shapes

    def train(self, weights, x, y, seed, round_no=1):
        return [w + 0.01 for w in weights], 1

    def evaluate(self, weights, x, y):
        return 0.5


def agent_config(tmp, node: str = "node-01", **fields: object):
    """The config of ``node`` of the ``consortium`` fixture's keys and genesis in ``tmp`` (a 40th of MNIST)."""
    from bpcv.config import AgentConfig

    return AgentConfig(
        key=str(tmp / f"{node}.key"),
        genesis=str(tmp / "genesis.bin"),
        chain_dir=str(tmp / f"{node}-chain"),
        num_shards=40,
        **fields,
    )


def wait_until(pred, timeout: float = 5.0) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass; its last value."""
    import time

    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pred()
