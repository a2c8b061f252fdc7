"""A round's block is written while the next round runs: the coordinator publishes the next global model
as soon as it has published a round's result, so the round's proposer may get that round's votes only
after the next round began (TensorFlow stubbed; the live runs in tests/integration go through it for real)."""

import queue

import numpy as np

from bpcv.codec import encode_model, model_digest
from bpcv.envelope import open_envelope
from bpcv.messages import GlobalModel, seal_message
from bpcv.topics import Topics
from edge_agent.agent import Agent
from tests.helpers import FakeTrainer, agent_config, honest_scores, round_block

SHAPES = [(3, 2), (2,)]
TOPICS = Topics()


def test_the_proposer_writes_a_rounds_block_from_votes_that_come_after_the_next_round_began(consortium):
    c, tmp = consortium
    agent = Agent(agent_config(tmp), queue.Queue(), lambda *a: FakeTrainer(SHAPES))
    published: list[str] = []
    agent.bus.publish = lambda topic, payload, **kw: published.append(topic) or True
    agent.handle(TOPICS.task("t1"), c.task_env.raw)
    roster = sorted(c.agents)

    def global_model(round_no: int) -> None:
        zeros = encode_model([np.zeros(s, np.float32) for s in SHAPES])
        glob = seal_message(c.coordinator, GlobalModel(roster, model_digest(zeros)), "t1", round_no, [zeros])
        agent.handle(TOPICS.global_model("t1", round_no), glob.raw)

    global_model(1)
    # Round 1 as its block will hold it: the peers' votes rank node-01 (this agent) first, so it proposes.
    scores = {v: s for v, s in honest_scores(roster).items() if v != "node-01"}
    expected = round_block(c, 1, agent.replica.head_hash, 1, scores, include_task=True)
    assert expected.proposer == "node-01"
    task_raw, *votes, result, reward = expected.txs
    assert task_raw == c.task_env.raw
    agent.handle(TOPICS.result("t1", 1), reward)  # the records come before the result
    agent.handle(TOPICS.result("t1", 1), result)
    assert not agent.replica.has_round("t1", 1)  # the votes are not here yet: no block
    global_model(2)  # the coordinator did not wait for round 1's block
    assert TOPICS.update("t1", 2, "node-01") in published
    registry = agent.replica.state.registry
    for raw in votes:
        agent.handle(TOPICS.vote("t1", 1, open_envelope(raw, registry, ("agent",)).sender), raw)
    assert agent.replica.has_round("t1", 1)  # proposed from round 1's votes, during round 2
    assert TOPICS.block("main") in published
    block = agent.replica.round_block("t1", 1)
    assert block is not None and sorted(block.txs) == sorted(expected.txs)
    rejected = dict(agent.intake.rejected)
    global_model(3)
    agent.handle(
        TOPICS.vote("t1", 1, open_envelope(votes[0], registry, ("agent",)).sender), votes[0]
    )  # two rounds back: no block waits for it
    assert agent.intake.rejected.get("wrong-round", 0) == rejected.get("wrong-round", 0) + 1
    agent.replica.close()
