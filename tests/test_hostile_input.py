"""Hostile input through the real coordinator and agent handlers: every bad message is refused with
a counted reason, nothing raises, nothing stored changes. (The broker is not connected here; the
live path over mosquitto is covered in tests/integration.)"""

import queue
import struct

import numpy as np

from bpcv.codec import encode_model, model_digest
from bpcv.config import AgentConfig
from bpcv.envelope import seal
from bpcv.identity import Identity
from bpcv.topics import Topics
from edge_agent.agent import Agent
from tests.helpers import offline_coordinator

SHAPES = [(3, 2), (2,)]
TOPICS = Topics()


def update_env(ident: Identity, round_no: int, weights, task="t1"):
    blob = encode_model(weights)
    return seal(ident, "update", task, round_no, {"digest": model_digest(blob), "num_samples": 10}, [blob])


def vote_with_infinity(ident: Identity) -> bytes:
    """A correctly signed vote whose header JSON holds ``Infinity``, which seal() would never write."""
    raw = seal(ident, "vote", "t1", 1, {"scores": {"node-03": 1.25}}).raw
    hlen = struct.unpack(">I", raw[5:9])[0]
    header = raw[9 : 9 + hlen].replace(b"1.25", b"Infinity")
    signed = raw[:5] + struct.pack(">I", len(header)) + header + raw[9 + hlen : -64]
    return signed + ident.sign(signed)


def test_coordinator_refuses_each_bad_message_and_keeps_going(consortium):
    c, tmp = consortium
    coord = offline_coordinator(c, tmp, ["node-01", "node-02", "node-03"], SHAPES, chain="coord-chain")
    good = [np.ones(s, np.float32) for s in SHAPES]
    inbox = coord.collector.inbox
    n1, n2, n3 = (c.agents[n] for n in inbox.roster)
    impostor = Identity("node-02", Identity.generate("x").signing_key)

    def feed(topic, raw):
        coord.handle(topic, raw)

    up = TOPICS.update
    feed(up("t1", 1, "node-01"), b"\x00garbage")
    feed(up("t1", 1, "node-01"), seal(n1, "update", "t1", 1, {}, [bytes(17 * 2**20)]).raw)
    feed(up("t1", 1, "node-01"), update_env(n1, 1, [np.full((3, 2), np.nan, np.float32), np.ones(2, np.float32)]).raw)
    feed(up("t1", 1, "node-02"), update_env(impostor, 1, good).raw)
    feed(up("t1", 1, "node-02"), update_env(n2, 0, good).raw)  # replay of an old round
    feed(up("t1", 1, "node-02"), update_env(n2, 1, [np.ones((2, 3), np.float32), np.ones(2, np.float32)]).raw)
    feed(up("t1", 1, "node-03"), update_env(n1, 1, good).raw)  # node-01 on node-03's topic
    feed(up("t1", 1, "node-03"), update_env(n3, 1, good).raw)
    feed(TOPICS.vote("t1", 1, "node-03"), seal(n3, "vote", "t1", 1, {"scores": {}}).raw)  # before manifest
    assert coord.collector.close_updates(set()).updates == {"node-03": inbox.valid["node-03"][0]}
    feed(TOPICS.vote("t1", 1, "node-03"), seal(n3, "vote", "t1", 1, {"scores": {"node-01": 0.5}}).raw)
    feed(TOPICS.vote("t1", 1, "node-03"), vote_with_infinity(n3))
    feed(TOPICS.block("main"), b"BPBK\x01junk")
    feed(up("t1", 1, "node-01"), b"")  # an agent clearing its retained update or vote: not a rejection
    feed(TOPICS.vote("t1", 1, "node-02"), b"")

    assert inbox.invalid == {"node-01": "non-finite", "node-02": "wrong-shape"}
    assert list(inbox.valid) == ["node-03"] and inbox.votes == {}
    assert dict(coord.intake.rejected) == {
        "malformed": 2,
        "oversize": 1,
        "non-finite": 1,
        "bad-signature": 1,
        "wrong-round": 1,
        "wrong-shape": 1,
        "sender-mismatch": 1,
        "early-vote": 1,
        "vote-off-manifest": 1,
        "invalid-block": 1,
    }
    assert coord.replica.height == 0
    coord.close()


class FakeTrainer:
    """Stands in for TensorFlow here; real training is covered in test_trainer_and_behaviours and integration."""

    shapes = SHAPES

    def evaluate(self, weights, x, y):
        return 0.5


def test_agent_refuses_bad_messages_on_every_topic(consortium):
    c, tmp = consortium
    jobs: queue.Queue = queue.Queue()
    agent = Agent(
        AgentConfig(
            key=str(tmp / "node-01.key"),
            genesis=str(tmp / "genesis.bin"),
            chain_dir=str(tmp / "a-chain"),
            num_shards=40,
        ),
        jobs,
        lambda *a: FakeTrainer(),
    )
    agent.handle(TOPICS.task("t1"), b"not an envelope")
    agent.handle(TOPICS.task("t1"), seal(c.agents["node-02"], "task", "t1", 0, c.task.to_body()).raw)  # wrong role
    agent.handle(TOPICS.task("t1"), c.task_env.raw)
    assert agent.task is not None and agent.task.task_id == "t1"
    garbage = b"\xff" * 100
    for topic in (
        TOPICS.global_model("t1", 1),
        TOPICS.update("t1", 1, "node-02"),
        TOPICS.manifest("t1", 1),
        TOPICS.vote("t1", 1, "node-02"),
        TOPICS.result("t1", 1),
        TOPICS.block("main"),
        "bpcv/v1/tasks/t1/round/notanumber/vote/node-02",
    ):
        agent.handle(topic, garbage)
    forged_global = seal(
        Identity("coordinator", Identity.generate("x").signing_key),
        "global",
        "t1",
        1,
        {"roster": ["node-01"], "model_digest": "00"},
        [encode_model([np.ones(s) for s in SHAPES])],
    )
    agent.handle(TOPICS.global_model("t1", 1), forged_global.raw)
    assert agent.round == 0 and agent.status == "idle" and agent.replica.height == 0
    assert agent.intake.rejected["malformed"] == 7 and agent.intake.rejected["bad-signature"] == 1
    assert agent.intake.rejected["wrong-role"] == 1 and agent.intake.rejected["invalid-block"] == 1
    agent.replica.close()
