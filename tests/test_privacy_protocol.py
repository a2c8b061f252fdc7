"""The privacy budget in the protocol: an agent stops at the right round and says so, signed; the
coordinator records it as leaving (not misbehaving) and never admits it. The budget test trains for
real (the task's model, GD-DP, the real accountant); the others stub TensorFlow."""

import json
import queue

import numpy as np

from bpcv.codec import encode_model, model_digest
from bpcv.config import AgentConfig
from bpcv.envelope import seal
from bpcv.messages import Join, Leave, seal_message
from bpcv.models import build_model
from bpcv.topics import Topics
from edge_agent.agent import Agent
from edge_agent.privacy.accountant import epsilon_for
from edge_agent.privacy.settings import steps_per_round
from edge_agent.trainer import Trainer
from tests.helpers import offline_coordinator

SHAPES = [(3, 2), (2,)]
TOPICS = Topics()


class StepCountingTrainer:
    shapes = SHAPES

    def __init__(self, task):
        self.task = task

    def train(self, weights, x, y, seed, round_no=1):
        return [w + 0.01 for w in weights], steps_per_round(len(y), self.task)

    def evaluate(self, weights, x, y):
        return 0.9


def global_env(c, round_no, roster, shapes=SHAPES):
    blob = encode_model([np.zeros(s, np.float32) for s in shapes])
    return seal(
        c.coordinator,
        "global",
        "t1",
        round_no,
        {"roster": roster, "model_digest": model_digest(blob)},
        [blob],
    )


def test_agent_stops_contributing_when_the_next_round_would_exceed_its_budget(consortium):
    c, tmp = consortium
    noise, shards = 2.0, 40
    config = AgentConfig(
        key=str(tmp / "node-01.key"),
        genesis=str(tmp / "genesis.bin"),
        chain_dir=str(tmp / "chain"),
        num_shards=shards,
        dp="laplace",
        noise_multiplier=noise,
    )
    probe = Agent(config, queue.Queue(), lambda task, *a: StepCountingTrainer(task))
    probe.handle(TOPICS.task("t1"), c.task_env.raw)
    per_round, accountant = probe.work.privacy.steps_per_round, probe.work.privacy.accountant
    probe.replica.close()
    # two rounds fit, not three
    budget = epsilon_for("laplace", noise, accountant.sampling_rate, 2 * per_round, accountant.delta) * 1.0001

    agent = Agent(
        AgentConfig(**{**config.__dict__, "epsilon": budget, "chain_dir": str(tmp / "chain2")}),
        queue.Queue(),
        lambda task, shape, classes, privacy: Trainer(task, shape, classes, privacy),  # real GD-DP training
    )
    agent.handle(TOPICS.task("t1"), c.task_env.raw)
    spent = []
    shapes = [tuple(w.shape) for w in build_model(c.task.model, (28, 28, 1), 10).get_weights()]
    for round_no in (1, 2, 3, 4):
        env = global_env(c, round_no, ["node-01", "node-02"], shapes)
        agent.handle(TOPICS.global_model("t1", round_no), env.raw)
        spent.append((agent.status, agent.epsilon_spent()))
    assert [s for s, _ in spent] == ["active", "active", "left", "left"]
    assert spent[1][1] <= budget and spent[2][1] == spent[1][1]  # nothing spent after leaving
    assert agent.work.privacy.accountant.steps == 2 * per_round
    agent.replica.close()


def test_coordinator_treats_a_leave_as_leaving_not_misbehaving(consortium):
    c, tmp = consortium
    coord = offline_coordinator(c, tmp, ["node-01", "node-02"], SHAPES, chain="cc")
    claims = {"mechanism": "laplace", "epsilon_budget": 1.0}
    for node, agent in c.agents.items():
        coord.handle(TOPICS.join("t1", node), seal_message(agent, Join(100, "mnist", claims), "t1").raw)
    leave = seal_message(c.agents["node-02"], Leave("privacy-budget-spent", 0.98), "t1", 1)
    coord.handle(TOPICS.join("t1", "node-02"), leave.raw)
    forged = seal_message(c.agents["node-01"], Leave("x"), "t1", 1)
    coord.handle(TOPICS.join("t1", "node-03"), forged.raw)  # node-01 cannot make node-03 leave
    joined = coord.collector.joined
    assert sorted(joined.order) == sorted(c.agents)
    assert joined.left == {"node-02": "privacy-budget-spent"}
    assert joined.privacy["node-02"]["epsilon_spent"] == 0.98
    assert coord.intake.rejected["sender-mismatch"] == 1 and "node-02" not in coord.collector.inbox.invalid
    coord.close()


def dp_agent(c, tmp, chain: str, **overrides) -> Agent:
    config = AgentConfig(
        key=str(tmp / "node-01.key"),
        genesis=str(tmp / "genesis.bin"),
        chain_dir=str(tmp / chain),
        **{"num_shards": 40, "dp": "laplace", "noise_multiplier": 2.0, **overrides},
    )
    agent = Agent(config, queue.Queue(), lambda task, *a: StepCountingTrainer(task))
    agent.handle(TOPICS.task("t1"), c.task_env.raw)
    return agent


def test_a_restarted_agent_resumes_what_it_spent_and_refuses_when_it_cannot_know(consortium):
    """An agent killed after round 1 and started again counts round 1's privacy: after round 2 it has
    spent two rounds' worth, as if it had never stopped. A corrupt record, or a record made under other
    privacy settings, keeps it out of the task (it cannot know its spend) and the record is left as it was."""
    c, tmp = consortium
    first = dp_agent(c, tmp, "chain")
    first.handle(TOPICS.global_model("t1", 1), global_env(c, 1, ["node-01", "node-02"]).raw)
    per_round, one_round = first.work.privacy.steps_per_round, first.epsilon_spent()
    first.replica.close()
    record = tmp / "privacy-spent-node-01.json"
    assert json.loads(record.read_text())["t1"]["steps"] == per_round

    again = dp_agent(c, tmp, "chain")  # the same node, a new process: the same chain folder
    assert again.epsilon_spent() == one_round  # before it trains again
    again.handle(TOPICS.global_model("t1", 2), global_env(c, 2, ["node-01", "node-02"]).raw)
    assert again.work.privacy.accountant.steps == 2 * per_round
    assert again.epsilon_spent() > one_round
    again.replica.close()

    other = dp_agent(c, tmp, "chain", epsilon=5.0, clip=7.0)  # budget and clip are not in the account: fine
    assert other.work is not None
    other.replica.close()
    kept = record.read_bytes()
    changed = dp_agent(c, tmp, "chain", noise_multiplier=3.0)
    assert changed.work is None and changed.status != "active"
    changed.replica.close()
    assert record.read_bytes() == kept
    record.write_text("{not json")
    broken = dp_agent(c, tmp, "chain")
    assert broken.work is None
    broken.replica.close()
    assert record.read_text() == "{not json"  # nothing overwritten by a refusal
