"""The nemesis's invariant checks (experiments/nemesis/invariants.py) find what they are meant to find: each
check is run on good replicas (no violation) and on one broken in exactly the way it looks for."""

import sys
from pathlib import Path

import pytest

from ledger.audit import RoundRecord, TaskAudit
from ledger.backends.lmdb import LmdbStore
from ledger.replica import Replica
from tests.helpers import honest_scores, make_consortium, round_block

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "nemesis"))
from invariants import chain_violations, task_violations


@pytest.fixture
def chains(tmp_path):
    """Replicas of one two-round chain: two full copies, one behind, one forked at height 2, one corrupt."""
    c = make_consortium()
    agents = list(c.agents)
    one = round_block(c, 1, c.genesis.hash, 1, honest_scores(agents, bad=agents[-1]), include_task=True)
    paths = {name: tmp_path / name for name in ("full", "copy", "behind", "forked", "corrupt")}
    replicas = {name: Replica.open(path, c.genesis.raw) for name, path in paths.items()}
    for replica in replicas.values():
        replica.append(one.raw)
    two = round_block(c, 2, one.hash, 2, honest_scores(agents, bad=agents[-1]), include_task=False)
    other = round_block(c, 2, one.hash, 2, honest_scores(agents, bad=agents[0]), include_task=False)
    assert other.hash != two.hash
    for name in ("full", "copy"):
        replicas[name].append(two.raw)
    replicas["forked"].append(other.raw)
    for replica in replicas.values():
        replica.close()
    with LmdbStore(paths["corrupt"]) as store:  # a block that is not a block, written past the verifier
        store.append(2, "ee" * 32, b"not a block")
    return paths


def test_copies_of_one_chain_pass(chains):
    assert chain_violations({n: chains[n] for n in ("full", "copy")}) == []


def test_a_replica_behind_the_others_is_named(chains):
    found = chain_violations({n: chains[n] for n in ("full", "behind")})
    assert found == ["behind: replica stops at height 1, others reached 2"]


def test_two_blocks_at_one_height_are_named(chains):
    found = chain_violations({n: chains[n] for n in ("full", "forked")})
    assert len(found) == 1 and found[0].startswith("two blocks at height 2: forked:"), found


def test_a_replica_that_does_not_verify_is_named(chains):
    found = chain_violations({n: chains[n] for n in ("full", "corrupt")})
    assert len(found) == 1 and found[0].startswith("corrupt: replica") and "does not verify" in found[0], found


def audit(rewards: list[dict[str, float]], epsilons: list[dict[str, float]], final: str | None) -> TaskAudit:
    c = make_consortium()
    rounds = []
    for i, (paid, eps) in enumerate(zip(rewards, epsilons, strict=True)):
        record = RoundRecord(i + 1, i + 1, "node-01", rewards=paid, epsilon_signed=dict(eps))
        record.result.ranking.extend(sorted(c.agents))
        rounds.append(record)
    rounds[-1].final_model_digest = final
    return TaskAudit("t1", c.task, rounds, "00" * 32)


GOOD_REWARDS = [{"node-01": 60.0, "node-02": 40.0}, {"node-01": 33.333333, "node-02": 33.333333, "node-03": 33.333333}]
GOOD_EPSILON = [{"node-01": 5.9, "node-02": 5.9}, {"node-01": 11.8, "node-02": 11.8}]


def test_a_task_paid_and_accounted_as_specified_passes():
    assert task_violations(audit(GOOD_REWARDS, GOOD_EPSILON, "ab" * 32), 40.0, "ab" * 32) == []


def test_a_coordinator_reporting_other_payments_than_the_chain_records_is_named():
    good = audit(GOOD_REWARDS, GOOD_EPSILON, "ab")
    assert task_violations(good, 40.0, "ab", {"node-01": 93.333333, "node-02": 73.333333, "node-03": 33.333333}) == []
    found = task_violations(good, 40.0, "ab", {"node-01": 93.333333, "node-02": 73.333333, "node-03": 66.666666})
    assert found == ["node-03: the coordinator reports 66.666666 paid, the chain records 33.333333"], found


@pytest.mark.parametrize(
    "rewards, epsilons, budget, final, expected",
    [
        (
            [GOOD_REWARDS[0], {"node-01": 60.0, "node-02": 30.0}],
            GOOD_EPSILON,
            40.0,
            "ab",
            "rewards sum to 90.0, not 100.0",
        ),
        ([GOOD_REWARDS[0], {"node-01": 50.0, "node-99": 50.0}], GOOD_EPSILON, 40.0, "ab", "a reward to a node outside"),
        (GOOD_REWARDS, GOOD_EPSILON, 10.0, "ab", "node-01 signed epsilon 11.8 over its budget 10.0"),
        (GOOD_REWARDS, [GOOD_EPSILON[1], GOOD_EPSILON[0]], 40.0, "ab", "node-01 signed epsilon 5.9, less than 11.8"),
        (GOOD_REWARDS, GOOD_EPSILON, 40.0, "cd", "final model cd"),
    ],
)
def test_each_broken_task_invariant_is_named(rewards, epsilons, budget, final, expected):
    found = task_violations(audit(rewards, epsilons, "ab"), budget, final)
    assert found and expected in found[0], found  # the first named (nodes in order)
