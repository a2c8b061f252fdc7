"""A vote cast before the manifest: an agent votes as soon as every peer it scores has sent its update,
and the coordinator holds such a vote until it has frozen the manifest, then checks it as any other. A
vote that scored an update the manifest leaves out is refused, and its voter votes again on the manifest.
(TensorFlow stubbed and no broker here; the live runs in tests/integration go through it for real.)"""

import queue

import numpy as np

from bpcv.codec import encode_model, model_digest
from bpcv.envelope import open_envelope
from bpcv.messages import GlobalModel, Manifest, Vote, read, seal_message
from bpcv.topics import Topics
from edge_agent.agent import Agent
from tests.helpers import FakeTrainer, agent_config, make_consortium, offline_coordinator
from tests.test_hostile_input import update_env

SHAPES = [(3, 2), (2,)]
TOPICS = Topics()


def weights(value: float) -> list[np.ndarray]:
    return [np.full(s, value, np.float32) for s in SHAPES]


def test_an_agent_votes_once_every_peer_it_scores_has_sent_and_again_if_the_manifest_leaves_one_out(consortium):
    c, tmp = consortium
    agent = Agent(agent_config(tmp), queue.Queue(), lambda *a: FakeTrainer(SHAPES))
    published: list[tuple[str, bytes]] = []
    agent.bus.publish = lambda topic, payload, **kw: published.append((topic, payload)) or True
    agent.handle(TOPICS.task("t1"), c.task_env.raw)
    roster = sorted(c.agents)  # node-01 (this agent), node-02, node-03
    zeros = encode_model(weights(0.0))
    glob = seal_message(c.coordinator, GlobalModel(roster, model_digest(zeros)), "t1", 1, [zeros])
    agent.handle(TOPICS.global_model("t1", 1), glob.raw)
    vote_topic = TOPICS.vote("t1", 1, "node-01")

    def votes() -> list[Vote]:
        registry = agent.replica.state.registry
        return [read(open_envelope(raw, registry, ("agent",)), Vote) for t, raw in published if t == vote_topic and raw]

    peer_updates = {n: update_env(c.agents[n], 1, weights(i)) for i, n in enumerate(["node-02", "node-03"], 1)}
    digests = {n: model_digest(env.blobs[0]) for n, env in peer_updates.items()}
    agent.handle(TOPICS.update("t1", 1, "node-02"), peer_updates["node-02"].raw)
    assert votes() == []  # node-03's update is not here yet
    agent.handle(TOPICS.update("t1", 1, "node-03"), peer_updates["node-03"].raw)
    assert [v.digests for v in votes()] == [digests]  # voted, with no manifest yet

    def manifest(listed: dict[str, str]) -> None:
        env = seal_message(c.coordinator, Manifest({"node-01": "00", **listed}), "t1", 1)
        agent.handle(TOPICS.manifest("t1", 1), env.raw)

    manifest(digests)  # lists what the vote scored: the vote stands
    assert len(votes()) == 1
    manifest({"node-02": digests["node-02"]})  # leaves node-03 out: the early vote is refused, so vote again
    assert [v.digests for v in votes()] == [digests, {"node-02": digests["node-02"]}]
    manifest({"node-02": digests["node-02"]})  # the same manifest again: the second vote stands
    assert len(votes()) == 2
    agent.replica.close()


def test_the_last_to_train_votes_right_after_its_update(consortium):
    c, tmp = consortium
    agent = Agent(agent_config(tmp), queue.Queue(), lambda *a: FakeTrainer(SHAPES))
    published: list[str] = []
    agent.bus.publish = lambda topic, payload, **kw: published.append(topic) or True
    agent.handle(TOPICS.task("t1"), c.task_env.raw)
    roster = sorted(c.agents)
    zeros = encode_model(weights(0.0))
    for peer in ("node-02", "node-03"):  # a peer a little ahead: its update comes before our global model
        agent.handle(TOPICS.update("t1", 1, peer), update_env(c.agents[peer], 1, weights(1.0)).raw)
    assert published == []
    glob = seal_message(c.coordinator, GlobalModel(roster, model_digest(zeros)), "t1", 1, [zeros])
    agent.handle(TOPICS.global_model("t1", 1), glob.raw)
    assert published == [TOPICS.update("t1", 1, "node-01"), TOPICS.vote("t1", 1, "node-01")]
    agent.replica.close()


def test_the_coordinator_holds_a_vote_before_the_manifest_and_checks_it_against_the_manifest(tmp_path):
    c = make_consortium(n_agents=4)
    (tmp_path / "genesis.bin").write_bytes(c.genesis.raw)
    c.coordinator.save(tmp_path / "coordinator.key")
    coord = offline_coordinator(c, tmp_path, ["node-01", "node-02", "node-03"], SHAPES)
    collector, inbox = coord.collector, coord.collector.inbox
    n1, n2, n3, n4 = (c.agents[n] for n in sorted(c.agents))
    updates = {ident.node_id: update_env(ident, 1, weights(i)) for i, ident in enumerate((n1, n2, n3), 1)}
    digest = {n: model_digest(env.blobs[0]) for n, env in updates.items()}

    def vote(ident, targets: list[str]) -> bytes:
        body = Vote({t: 0.5 for t in targets}, "accuracy", {t: digest[t] for t in targets})
        return seal_message(ident, body, "t1", 1).raw

    coord.handle(TOPICS.vote("t1", 1, "node-01"), vote(n1, ["node-02"]))  # before its own update: held all the same
    for node, env in updates.items():
        coord.handle(TOPICS.update("t1", 1, node), env.raw)
    coord.handle(TOPICS.vote("t1", 1, "node-01"), vote(n1, ["node-02", "node-03"]))  # a second one: refused
    coord.handle(TOPICS.vote("t1", 1, "node-02"), vote(n2, ["node-01", "node-03"]))  # scores node-03, left out below
    coord.handle(TOPICS.vote("t1", 1, "node-04"), vote(n4, ["node-01"]))  # not in the roster: refused
    assert inbox.votes == {} and collector.missing_votes() == ["node-01", "node-02", "node-03"]
    manifest = collector.close_updates({"node-03"})  # node-03 proven to have equivocated: left out
    assert manifest.updates == {"node-01": digest["node-01"], "node-02": digest["node-02"]}
    assert list(inbox.votes) == ["node-01"] and inbox.scores["node-01"] == {"node-02": 0.5}
    assert collector.missing_votes() == ["node-02"]
    coord.handle(TOPICS.vote("t1", 1, "node-02"), vote(n2, ["node-01"]))  # node-02 votes again on the manifest
    assert sorted(inbox.votes) == ["node-01", "node-02"] and collector.missing_votes() == []
    rejected = dict(coord.intake.rejected)
    assert rejected == {"duplicate-vote": 1, "not-a-voter": 1, "vote-off-manifest": 1, "equivocation": 1}
    coord.close()
