"""Validation committees: who scores whom is drawn from a block hash, every node scores k peers and is
scored by k, and a vote outside its committee is refused by the coordinator and by every replica."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcv.codec import encode_model, model_digest
from bpcv.committee import COMMITTEE_SEED_DEPTH, assign, capture_probability, scorers
from bpcv.errors import ConfigError
from bpcv.intake import Intake
from bpcv.messages import Manifest, Update, Vote, seal_message
from bpcv.task import TaskSpec
from bpcv.topics import Topics
from coordinator.collector import RoundCollector
from edge_agent.round_clock import RoundClock
from edge_agent.round_topics import RoundTopics
from edge_agent.rounds import RoundState
from ledger.errors import InvalidBlock
from ledger.replica import Replica
from ledger.validate import validate_genesis
from tests.helpers import make_consortium, round_block

SEED = "5e" * 32


@settings(max_examples=200, deadline=None)
@given(st.integers(4, 60), st.integers(3, 70), st.text("0123456789abcdef", min_size=64, max_size=64))
def test_every_node_scores_k_peers_and_is_scored_by_k(n, k, seed):
    nodes = [f"node-{i:03d}" for i in range(n)]
    assignment = assign(nodes, k, seed, "t1", 3)
    expected = min(k, n - 1)
    assert sorted(assignment) == nodes
    for voter, targets in assignment.items():
        assert voter not in targets and len(set(targets)) == len(targets) == expected
    assert all(len(judges) == expected for judges in scorers(assignment).values())
    assert assign(list(reversed(nodes)), k, seed, "t1", 3) == assignment  # the order given does not matter


def test_the_draw_depends_on_the_seed_task_and_round_and_zero_means_every_peer():
    nodes = [f"node-{i:02d}" for i in range(20)]
    first = assign(nodes, 5, SEED, "t1", 1)
    assert first == assign(nodes, 5, SEED, "t1", 1)
    assert first != assign(nodes, 5, "a" + SEED[1:], "t1", 1)
    assert first != assign(nodes, 5, SEED, "t2", 1)
    assert first != assign(nodes, 5, SEED, "t1", 2)
    everyone = assign(nodes, 0, SEED, "t1", 1)
    assert all(sorted(t) == [p for p in nodes if p != n] for n, t in everyone.items())
    with pytest.raises(ValueError, match="k >= 0"):
        assign(nodes, -1, SEED, "t1", 1)


def test_capture_probability_matches_a_hand_count_and_falls_with_k():
    # 5 nodes, 1 colluder, k = 3 of the 4 others: a median of 3 moves with 2 colluders -> never
    assert capture_probability(5, 1, 3) == 0.0
    # 5 nodes, 2 colluders, k = 3: C(2,2)C(2,1) / C(4,3) = 2/4
    assert capture_probability(5, 2, 3) == pytest.approx(0.5)
    assert capture_probability(50, 5, 9) < capture_probability(50, 5, 3)


def test_a_task_refuses_a_committee_too_small_for_a_median():
    for bad in (1, 2, -1, 2.5, True):
        with pytest.raises(ConfigError, match="committee must be 0"):
            TaskSpec(task_id="t1", coordinator="coordinator", committee=bad).validate()
    assert "committee" not in TaskSpec(task_id="t1", coordinator="coordinator").to_body()
    assert TaskSpec.from_body(TaskSpec(task_id="t1", coordinator="c", committee=5).to_body()).committee == 5


def committee_scores(assignment: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    return {v: {t: 0.9 - 0.01 * int(t[-2:]) for t in targets} for v, targets in assignment.items()}


def test_replicas_accept_votes_within_committees_and_refuse_any_outside():
    c = make_consortium(n_agents=8, committee=3)
    agents = list(c.agents)
    replica = Replica.open(None, c.genesis.raw)
    seed = replica.head_hash
    assignment = assign(agents, 3, seed, "t1", 1)
    scores = committee_scores(assignment)
    voter = agents[0]
    outsider = next(a for a in agents if a != voter and a not in assignment[voter])
    stretched = {**scores, voter: {**scores[voter], outsider: 0.5}}
    with pytest.raises(InvalidBlock, match=f"vote of {voter} scores \\['{outsider}'\\], outside its committee"):
        replica.append(round_block(c, 1, seed, 1, stretched, include_task=True, committee=(seed, agents)).raw)
    with pytest.raises(InvalidBlock, match=f"not one of the last {COMMITTEE_SEED_DEPTH} block hashes"):
        replica.append(round_block(c, 1, seed, 1, scores, include_task=True, committee=("ab" * 32, agents)).raw)
    assert replica.height == 0
    replica.append(round_block(c, 1, seed, 1, scores, include_task=True, committee=(seed, agents)).raw)
    assert replica.height == 1
    # round 2 drawn from block 1: the seed one block back (block 1's parent, the genesis) is still accepted
    late = assign(agents, 3, seed, "t1", 2)
    replica.append(round_block(c, 2, replica.head_hash, 2, committee_scores(late), False, committee=(seed, agents)).raw)
    assert replica.height == 2


def test_a_task_without_committees_refuses_a_result_that_records_them():
    c = make_consortium(n_agents=4)
    replica = Replica.open(None, c.genesis.raw)
    everyone = assign(list(c.agents), 0, "", "t1", 1)
    block = round_block(c, 1, replica.head_hash, 1, committee_scores(everyone), True, committee=(replica.head_hash, []))
    with pytest.raises(InvalidBlock, match="records committees, but the task has none"):
        replica.append(block.raw)


def test_the_coordinator_refuses_a_vote_outside_its_committee_and_agents_score_only_theirs():
    c = make_consortium(n_agents=6, committee=3)
    agents = list(c.agents)
    registry = validate_genesis(c.genesis).registry
    collector = RoundCollector(c.task, Intake(registry, "coordinator"), [(2,)])
    inbox = collector.begin_round(1, agents, SEED)
    assert inbox.committee_fields() == {"committee_seed": SEED, "validated": agents}
    blob = encode_model([np.ones(2, np.float32)])
    topic = "bpcv/v1/tasks/t1/round/1/{}/{}"
    for node in agents:
        update = seal_message(c.agents[node], Update(model_digest(blob), 10), "t1", 1, [blob])
        collector.handle(topic.format("update", node), ("tasks", "t1", "round", "1", "update", node), update.raw)
    manifest = collector.close_updates(set())
    assert sorted(manifest.updates) == agents
    assignment = assign(agents, 3, SEED, "t1", 1)
    voter = agents[0]
    outsider = next(a for a in agents if a != voter and a not in assignment[voter])
    for targets, counted in ((assignment[voter] + [outsider], False), (assignment[voter], True)):
        vote = Vote({t: 0.9 for t in targets}, "accuracy", {t: manifest.updates[t] for t in targets})
        env = seal_message(c.agents[voter], vote, "t1", 1)
        collector.handle(topic.format("vote", voter), ("tasks", "t1", "round", "1", "vote", voter), env.raw)
        assert (voter in collector.inbox.votes) is counted
    assert collector.intake.rejected["vote-off-committee"] == 1

    state = RoundState()
    state.start(1, agents, c.task, voter, SEED)
    assert state.peers == assignment[voter]
    for node in agents:
        state.keep_update(1, node, blob)
    missing, blobs = state.to_score(voter, manifest.updates)
    assert not missing and sorted(blobs) == assignment[voter]
    state.start(1, agents, c.task, voter, None)  # a committee task's global model without a seed: score nobody
    assert state.peers == [] and state.to_score(voter, manifest.updates) == ([], {})
    state.start(1, agents, make_consortium(n_agents=6).task, voter, None)  # no committees: every listed peer
    assert sorted(state.to_score(voter, Manifest(manifest.updates).updates)[1]) == agents[1:]


class RecordingBus:
    """Records what an agent's RoundTopics asks of its MQTT client (the live test uses a real one)."""

    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.published: list[tuple[str, bytes, bool]] = []

    def subscribe(self, topic: str) -> None:
        self.subscribed.append(topic)

    def unsubscribe(self, topic: str) -> None:
        self.subscribed.remove(topic)

    def publish(self, topic: str, payload: bytes, retain: bool = False, wait: float | None = 30.0) -> bool:
        self.published.append((topic, payload, retain))
        return True


def test_with_committees_an_agent_listens_to_its_committees_updates_only_and_keeps_its_own_retained():
    topics = Topics()
    bus = RecordingBus()
    round_topics = RoundTopics(bus, topics, "node-01", RoundClock())  # type: ignore[arg-type]
    round_topics.start_task(make_consortium(n_agents=6, committee=3).task)
    control = topics.round_control("t1")
    assert bus.subscribed == control and not any("update" in t or "vote" in t for t in control)
    round_topics.follow(1, ["node-02", "node-05"])
    assert bus.subscribed == [*control, topics.update("t1", 1, "node-02"), topics.update("t1", 1, "node-05")]
    round_topics.follow(2, ["node-03"])  # round 1's updates no longer
    assert bus.subscribed == [*control, topics.update("t1", 2, "node-03")]
    round_topics.publish_update(1, b"one")
    round_topics.publish_update(2, b"two")  # round 1's retained update is cleared
    assert bus.published == [
        (topics.update("t1", 1, "node-01"), b"one", True),
        (topics.update("t1", 1, "node-01"), b"", True),
        (topics.update("t1", 2, "node-01"), b"two", True),
    ]

    plain = RecordingBus()
    every = RoundTopics(plain, topics, "node-01", RoundClock())  # type: ignore[arg-type]
    every.start_task(make_consortium(n_agents=6).task)
    every.follow(1, None)
    every.publish_update(1, b"one")
    assert plain.subscribed == [*control, topics.all_updates("t1")]
    assert plain.published == [(topics.update("t1", 1, "node-01"), b"one", False)]


def test_votes_reach_an_agent_only_for_the_round_it_proposes_and_stay_retained_for_one_more_round():
    """Votes go to the coordinator and the round's proposer, not to every agent (N² messages a round): an
    agent subscribes to a round's votes when it is to propose its block, until the round after the next starts
    (the block is written while the next round runs); its own vote is retained (the proposer learns its place
    after the votes were sent) until it publishes the vote of the round after the next."""
    topics = Topics()
    bus = RecordingBus()
    round_topics = RoundTopics(bus, topics, "node-01", RoundClock())  # type: ignore[arg-type]
    round_topics.start_task(make_consortium(n_agents=6).task)
    before = list(bus.subscribed)
    assert not any(t.endswith(("/vote/+", "/#")) for t in before)
    round_topics.publish_vote(1, b"v1")
    round_topics.fetch_votes(1)
    round_topics.fetch_votes(1)  # a stand-in asked again: one subscription
    assert bus.subscribed == [*before, topics.round_votes("t1", 1)]
    round_topics.follow(2, None)  # the next round: round 1's block may still be ours to write
    assert bus.subscribed == [*before, topics.round_votes("t1", 1)]
    round_topics.follow(3, None)  # the round after: round 1's votes no longer
    assert bus.subscribed == before
    round_topics.publish_vote(2, b"v2")  # round 1's vote stays retained: its block may still be to write
    round_topics.publish_again("vote", 1, b"v1")  # asked again: retained again (a restarted broker lost it)
    round_topics.publish_vote(3, b"v3")  # now round 1's is cleared
    assert bus.published == [
        (topics.vote("t1", 1, "node-01"), b"v1", True),
        (topics.vote("t1", 2, "node-01"), b"v2", True),
        (topics.vote("t1", 1, "node-01"), b"v1", True),
        (topics.vote("t1", 1, "node-01"), b"", True),
        (topics.vote("t1", 3, "node-01"), b"v3", True),
    ]
    round_topics.publish_again("vote", 1, b"v1")  # an older round's: not retained (it was cleared)
    assert bus.published[-1] == (topics.vote("t1", 1, "node-01"), b"v1", False)
    round_topics.fetch_votes(2)
    round_topics.start_task(make_consortium(n_agents=6, committee=3).task)  # a new task: nothing of the old
    assert topics.round_votes("t1", 2) not in bus.subscribed


def test_without_supervision_an_agent_listens_to_no_peers_update():
    topics = Topics()
    bus = RecordingBus()
    round_topics = RoundTopics(bus, topics, "node-01", RoundClock())  # type: ignore[arg-type]
    plain = make_consortium(n_agents=6, strategy="fedavg", supervised=False).task
    round_topics.start_task(plain)
    state = RoundState()
    state.start(1, list(make_consortium(n_agents=6).agents), plain, "node-01")
    round_topics.follow(1, state.peers)
    assert state.peers == [] and bus.subscribed == topics.round_control("t1")
