"""An agent whose own update is out scores its peers' updates as they arrive, while slower peers still
train; its vote reuses those scores when the manifest lists the same digests (TensorFlow stubbed)."""

import queue

import numpy as np

from bpcv.codec import encode_model, model_digest
from bpcv.envelope import open_envelope
from bpcv.messages import GlobalModel, Manifest, Update, seal_message
from bpcv.topics import Topics
from edge_agent.agent import Agent
from tests.helpers import FakeTrainer, agent_config

SHAPES = [(3, 2), (2,)]
TOPICS = Topics()


class RecordingTrainer(FakeTrainer):
    """Scores a model by its first weight, and records every model it scores."""

    def __init__(self) -> None:
        super().__init__(SHAPES)
        self.scored: list[float] = []

    def evaluate(self, weights, x, y):
        self.scored.append(round(float(weights[0].flat[0]), 6))
        return self.scored[-1]


def update_of(c, peer: str, value: float, round_no: int = 2) -> tuple[bytes, str]:
    blob = encode_model([np.full(s, value, np.float32) for s in SHAPES])
    digest = model_digest(blob)
    return seal_message(c.agents[peer], Update(digest, 100), "t1", round_no, [blob]).raw, digest


def test_a_peers_update_is_scored_as_it_arrives_once_the_agents_own_update_is_out(consortium):
    c, tmp = consortium
    trainer = RecordingTrainer()
    agent = Agent(agent_config(tmp), queue.Queue(), lambda *a: trainer)
    published = []
    agent.bus.publish = lambda topic, payload, **kw: published.append((topic, payload)) or True
    agent.handle(TOPICS.task("t1"), c.task_env.raw)

    def global_model(round_no: int, roster: list[str]) -> None:
        zeros = encode_model([np.zeros(s, np.float32) for s in SHAPES])
        glob = seal_message(c.coordinator, GlobalModel(roster, model_digest(zeros)), "t1", round_no, [zeros])
        agent.handle(TOPICS.global_model("t1", round_no), glob.raw)

    global_model(1, ["node-02", "node-03"])  # round 1 without us (standby): we neither train nor score
    agent.handle(TOPICS.update("t1", 1, "node-03"), update_of(c, "node-03", 0.1, round_no=1)[0])
    assert published == [] and trainer.scored == []

    early, early_digest = update_of(c, "node-02", 0.2)
    agent.handle(TOPICS.update("t1", 2, "node-02"), early)  # before our round 2 began: kept, not scored yet
    global_model(2, ["node-01", "node-02", "node-03"])
    assert [t for t, _ in published] == [TOPICS.update("t1", 2, "node-01")] and trainer.scored == []

    late, late_digest = update_of(c, "node-03", 0.3)
    agent.handle(TOPICS.update("t1", 2, "node-03"), late)  # our update is out: scored now, before the manifest
    assert trainer.scored == [0.3]
    assert len(published) == 1  # no vote yet: that waits for the manifest

    manifest = Manifest({"node-02": early_digest, "node-03": late_digest})
    agent.handle(TOPICS.manifest("t1", 2), seal_message(c.coordinator, manifest, "t1", 2).raw)
    assert trainer.scored == [0.3, 0.2]  # node-02's update scored for the vote, node-03's not again
    vote = open_envelope(published[-1][1], agent.replica.state.registry, ("agent",))
    assert vote.type == "vote" and vote.body["scores"] == {"node-02": 0.2, "node-03": 0.3}
    assert vote.body["digests"] == manifest.updates
    agent.replica.close()
