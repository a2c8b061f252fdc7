"""Real TensorFlow training on a small slice of real MNIST, what each behaviour publishes, and one round
through the agent's protocol with a behaviour's hooks in it (TensorFlow stubbed there)."""

import queue

import numpy as np
import pytest

from bpcv.codec import encode_model, model_digest
from bpcv.config import AgentConfig
from bpcv.data import load_dataset, make_shard
from bpcv.envelope import open_envelope
from bpcv.errors import ConfigError
from bpcv.identity import Identity
from bpcv.messages import GlobalModel, Manifest, Result, Reward, Update, Vote, seal_message
from bpcv.task import TaskSpec
from bpcv.topics import Topics
from edge_agent import behaviours
from edge_agent.agent import Agent, Status
from ledger.block import build_block, decode_block
from tests.helpers import FakeTrainer


@pytest.fixture(scope="module")
def trainer_and_data():
    from bpcv.models import configure_tensorflow
    from edge_agent.trainer import Trainer

    configure_tensorflow(2)
    ds = load_dataset("mnist")
    shard = make_shard(ds, 0, 25, seed=0)  # 1,800 train / 200 validation samples
    task = TaskSpec(task_id="t", coordinator="c", model="mlp:32", local_epochs=2)
    return Trainer(task, ds.input_shape, 10), shard


def test_local_training_improves_validation_accuracy(trainer_and_data):
    trainer, shard = trainer_and_data
    initial = trainer.model.get_weights()
    before = trainer.evaluate(initial, shard.x_val, shard.y_val)
    trained, steps = trainer.train(initial, shard.x_train, shard.y_train, seed=1)
    after = trainer.evaluate(trained, shard.x_val, shard.y_val)
    assert before < 0.3 and after > 0.75
    assert [w.shape for w in trained] == [tuple(s) for s in trainer.shapes]


@pytest.mark.parametrize("seed", [3, 0])  # 0: TensorFlow's seed pair (0, 0) means unseeded, so fit's is (0, 2**31 - 1)
def test_training_takes_keras_fits_steps_bit_for_bit(trainer_and_data, seed):
    """The agent trains with Keras fit's own permutations and train_step instead of fit itself (whose
    tf.data pipeline held about 250 MiB more in an agent): the same weights from the same seed, with a
    partial last batch and two epochs; another seed shuffles otherwise."""
    import tensorflow as tf

    from edge_agent.trainer import Trainer

    _, shard = trainer_and_data
    x, y = shard.x_train[:300], shard.y_train[:300]  # 4 batches of 64 and one of 44
    task = TaskSpec(task_id="t", coordinator="c", model="mlp:8", local_epochs=2, batch_size=64)
    trainer = Trainer(task, x.shape[1:], 10)
    start = trainer.model.get_weights()
    ours, _ = trainer.train(start, x, y, seed=seed)
    keras = Trainer(task, x.shape[1:], 10).model  # the same model, compiled the same way, trained by fit
    keras.set_weights(start)
    tf.keras.utils.set_random_seed(seed)
    keras.fit(x, y, batch_size=64, epochs=2, verbose=0, shuffle=True)
    for a, b in zip(ours, keras.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other, _ = trainer.train(start, x, y, seed=seed + 1)
    assert max(np.abs(a - b).max() for a, b in zip(ours, other, strict=True)) > 1e-4


@pytest.mark.parametrize("privacy", [None, "laplace"])
def test_a_training_job_leaves_tensorflows_compiled_functions_and_random_streams_alone(trainer_and_data, privacy):
    """Setting TensorFlow's global seed per job cleared its kernel caches: every compiled function was
    instantiated again at each job (~40 ms, most of a small shard's round) and every seeded stream started
    over (a Dropout layer drew the same masks in every round). A stream running beside training keeps going."""
    import tensorflow as tf

    from edge_agent.privacy.settings import PrivacySettings
    from edge_agent.trainer import Trainer

    _, shard = trainer_and_data
    x, y = shard.x_train[:100], shard.y_train[:100]
    task = TaskSpec(task_id="t", coordinator="c", model="mlp:8", local_epochs=1, batch_size=64)
    trainer = Trainer(task, x.shape[1:], 10, PrivacySettings(privacy, 1.0, 1.0) if privacy else None)
    tf.random.set_seed(7)
    draw = tf.function(lambda: tf.random.uniform([8]))
    before = draw().numpy()
    trainer.train(trainer.model.get_weights(), x, y, seed=7)
    assert not np.array_equal(draw().numpy(), before)


def test_lr_decay_scales_each_rounds_step_and_travels_only_when_set(trainer_and_data):
    from edge_agent.trainer import Trainer

    _, shard = trainer_and_data
    x, y = shard.x_train[:64], shard.y_train[:64]
    task = TaskSpec(
        task_id="t", coordinator="c", model="mlp:8", local_epochs=1, batch_size=64, learning_rate=0.3, lr_decay=0.5
    )
    trainer = Trainer(task, x.shape[1:], 10)
    start = trainer.model.get_weights()

    def step(round_no):  # one full-batch SGD step: exactly -lr * gradient
        trained, _ = trainer.train(start, x, y, seed=1, round_no=round_no)
        return np.concatenate([(a - b).ravel() for a, b in zip(trained, start, strict=True)])

    first, third = step(1), step(3)
    assert np.abs(first).max() > 1e-4
    np.testing.assert_allclose(third, 0.25 * first, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(step(1), first, rtol=1e-6)  # and back: the rate is set each round, not compounded
    assert TaskSpec.from_body(task.to_body()) == task and task.to_body()["lr_decay"] == 0.5
    assert "lr_decay" not in TaskSpec(task_id="t", coordinator="c").to_body()  # constant-rate bodies as before
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match=r"lr_decay must be in \(0, 1\]"):
            TaskSpec(task_id="t", coordinator="c", lr_decay=bad).validate()


def test_label_flip_training_scores_badly_on_honest_validation_data(trainer_and_data):
    trainer, shard = trainer_and_data
    flipped = behaviours.create("label-flip").training_labels(shard.y_train, 10)
    assert np.all(flipped == 9 - shard.y_train)
    weights, _ = trainer.train(trainer.model.get_weights(), shard.x_train, flipped, seed=1)
    assert trainer.evaluate(weights, shard.x_val, shard.y_val) < 0.2


def test_update_shaping_per_behaviour():
    rng = np.random.default_rng(0)
    g, w = [np.zeros(3, np.float32)], [np.ones(3, np.float32)]
    b = behaviours.create
    assert b("honest").shape_update(g, w, rng)[0].tolist() == [1, 1, 1]
    assert b("free-ride").shape_update(g, None, rng)[0].tolist() == [0, 0, 0]
    assert b("sign-flip").shape_update(g, w, rng)[0].tolist() == [-4, -4, -4]
    assert not np.allclose(b("random-weights").shape_update(g, None, rng)[0], 0)
    assert not b("free-ride").trains and b("label-flip").trains
    assert b("lying-voter").shape_scores({"a": 0.9, "b": 0.2}, True) == {"a": 0.1, "b": 0.8}
    assert b("honest").shape_scores({"a": 0.9}, True) == {"a": 0.9}
    with pytest.raises(ValueError, match="unknown behaviour"):
        behaviours.check_behaviour("evil")
    with pytest.raises(ValueError, match="unknown behaviour"):
        behaviours.create("evil")
    assert behaviours.BEHAVIOURS[0] == "honest" and set(behaviours.BEHAVIOURS) == set(behaviours.REGISTRY)


def test_scaling_free_ride_noise_alie_and_collude_group_by_hand():
    from bpcv.identity import Identity

    rng = np.random.default_rng(0)
    g = [np.array([1.0, 2.0, 3.0], np.float32)]
    assert behaviours.create("scaling").shape_update(g, [g[0] + 0.1], rng)[0] == pytest.approx([2, 3, 4])
    tiny = behaviours.create("free-ride-noise").shape_update(g, None, rng)[0]
    assert not np.array_equal(tiny, g[0]) and np.abs(tiny - g[0]).max() < 0.01
    assert not behaviours.create("free-ride-noise").trains
    # the mimic trains its first round, honestly, then sends the global model with noise only where
    # that training moved something (here the second tensor), never training again
    mimic, g2 = behaviours.create("free-ride-mimic"), [np.zeros((2, 2), np.float32), g[0]]
    assert mimic.trains and mimic.shape_update(g2, [g2[0], g2[1] + 0.5], rng)[1] == pytest.approx(g[0] + 0.5)
    nxt2 = [np.ones((2, 2), np.float32), g[0] + 1]
    frozen, moved = mimic.shape_update(nxt2, None, rng)
    assert not mimic.trains and np.array_equal(frozen, nxt2[0])
    assert not np.array_equal(moved, nxt2[1]) and np.abs(moved - nxt2[1]).max() < 0.01
    # three ALIE members in one process pool their deltas: (+1, +3) then (+2, +1) ...
    a, b, c = (behaviours.create("alie", Identity.generate(f"alie-{i}")) for i in range(3))
    assert a.shape_update(g, [g[0] + 1], rng)[0] == pytest.approx(g[0] + 1)  # alone in round 1: honest
    second = b.shape_update(g, [g[0] + 3], rng)[0]
    assert second == pytest.approx(g[0] + 2 - 1)  # mean 2, std 1, z = 1
    third = c.shape_update(g, [g[0] + 2], rng)[0]
    assert third == pytest.approx(g[0] + 2 - np.std([1, 3, 2]))
    nxt = [g[0] + 5]  # a new round (a new global model): the first to send uses last round's spread
    assert a.shape_update(nxt, [nxt[0] + 4], rng)[0] == pytest.approx(nxt[0] + 4 - np.std([1, 3, 2]))
    member = behaviours.create("collude-group", Identity.generate("cg-1"))
    behaviours.create("collude-group", Identity.generate("cg-2"))
    scores = member.shape_scores({"cg-2": 0.3, "honest-1": 0.9}, True)
    assert scores == {"cg-2": 1.0, "honest-1": 0.45}
    assert member.shape_scores({"cg-2": 2.0, "honest-1": 1.0}, False) == {"cg-2": 0.0, "honest-1": 2.0}


def test_proposal_hooks_per_behaviour(monkeypatch):
    """equivocate publishes a twin of its block (same height, parent, rank and txs, 1 ms later);
    dies-at-proposal kills its own process when it is about to propose as the winner, not as a stand-in."""
    me = Identity.generate("node-01")
    block = build_block(me, 3, "ab" * 32, "t1", 2, [b"tx"], ts=100.0, rank=1)
    published = []
    behaviours.create("honest", me).after_propose(block, [b"tx"], published.append)
    assert published == []
    behaviours.create("equivocate", me).after_propose(block, [b"tx"], published.append)
    (twin,) = published
    assert (twin.height, twin.prev_hash, twin.task, twin.round, twin.rank, twin.txs, twin.proposer) == (
        3,
        "ab" * 32,
        "t1",
        2,
        1,
        (b"tx",),
        "node-01",
    )
    assert twin.ts == 100.001 and twin.hash != block.hash

    kills = []
    monkeypatch.setattr(behaviours.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    dies = behaviours.create("dies-at-proposal", me)
    dies.before_propose(1)
    assert kills == []
    dies.before_propose(0)
    assert kills == [(behaviours.os.getpid(), behaviours.signal.SIGKILL)]
    behaviours.create("honest", me).before_propose(0)
    assert len(kills) == 1


SHAPES = [(3, 2), (2,)]


def test_one_round_through_the_agent_with_an_equivocating_behaviour(consortium):
    """Global model -> update, manifest -> vote (typed bodies, the wire's fields), result naming the agent
    PoQ winner -> it proposes the round block on its replica; its behaviour's hook then publishes a twin."""
    c, tmp = consortium
    topics = Topics()
    config = AgentConfig(
        key=str(tmp / "node-01.key"),
        genesis=str(tmp / "genesis.bin"),
        chain_dir=str(tmp / "chain"),
        num_shards=40,
        behaviour="equivocate",
    )
    agent = Agent(config, queue.Queue(), lambda *a: FakeTrainer(SHAPES))
    published = []
    agent.bus.publish = lambda topic, payload, **kw: published.append((topic, payload)) or True
    agent.handle(topics.task("t1"), c.task_env.raw)

    zeros = encode_model([np.zeros(s, np.float32) for s in SHAPES])
    roster = ["node-01", "node-02", "node-03"]
    glob = seal_message(c.coordinator, GlobalModel(roster, model_digest(zeros)), "t1", 1, [zeros])
    agent.handle(topics.global_model("t1", 1), glob.raw)
    assert agent.status == Status.ACTIVE == "active" and agent.round == 1
    ((topic, raw),) = published
    update = open_envelope(raw, agent.replica.state.registry, ("agent",))
    assert topic == topics.update("t1", 1, "node-01")
    assert sorted(update.body) == ["digest", "epsilon_spent", "num_samples"]

    digests = {}
    for peer in ("node-02", "node-03"):
        blob = encode_model([np.full(s, 0.1, np.float32) for s in SHAPES])
        env = seal_message(c.agents[peer], Update(model_digest(blob), 100), "t1", 1, [blob])
        agent.handle(topics.update("t1", 1, peer), env.raw)
        digests[peer] = model_digest(blob)
    agent.handle(topics.manifest("t1", 1), seal_message(c.coordinator, Manifest(digests), "t1", 1).raw)
    vote = open_envelope(published[-1][1], agent.replica.state.registry, ("agent",))
    assert vote.type == "vote" and sorted(vote.body) == ["digests", "epsilon_spent", "metric", "scores"]
    assert vote.body["scores"] == {"node-02": 0.5, "node-03": 0.5} and vote.body["digests"] == digests

    scores = {"node-02": {"node-01": 0.9, "node-03": 0.8}, "node-03": {"node-01": 0.9, "node-02": 0.7}}
    votes = [vote] + [seal_message(c.agents[v], Vote(s, "accuracy"), "t1", 1) for v, s in scores.items()]
    agent.handle(topics.vote("t1", 1, votes[1].sender), votes[1].raw)  # fetched by the proposer
    reward = seal_message(c.coordinator, Reward({"node-01": 60.0, "node-03": 40.0}), "t1", 1)
    ranking = ["node-01", "node-03", "node-02"]  # quality 0.9, 0.65, 0.6
    result = Result(
        ranking=ranking,
        votes=sorted(v.digest for v in votes),
        records=[reward.digest],
        global_digest="ab" * 32,
        proposer="node-01",
        eliminated="node-02",
        eliminated_reason="lowest-quality",
    )
    result_env = seal_message(c.coordinator, result, "t1", 1)
    agent.handle(topics.result("t1", 1), reward.raw)
    agent.handle(topics.result("t1", 1), result_env.raw)
    assert agent.replica.height == 0  # one listed vote is missing: the proposer waits for it
    forged = seal_message(c.agents["node-03"], Reward({"node-03": 100.0}), "t1", 1)  # only the coordinator's
    agent.handle(topics.result("t1", 1), forged.raw)
    assert agent.intake.rejected["wrong-sender"] == 1 and agent.replica.height == 0
    agent.handle(topics.result("t1", 1), votes[2].raw)  # the coordinator relays the vote, signed by its voter

    blocks = [decode_block(raw) for topic, raw in published if topic == topics.block("main")]
    assert agent.replica.height == 1 and len(blocks) == 2  # the block, and the behaviour's twin
    block, twin = blocks
    assert block.hash == agent.replica.head_hash and (block.proposer, block.rank) == ("node-01", 0)
    in_order = [v.raw for v in sorted(votes, key=lambda v: v.digest)]
    assert block.txs == (c.task_env.raw, *in_order, result_env.raw, reward.raw)  # task, votes, result, records
    assert (twin.height, twin.prev_hash, twin.txs) == (block.height, block.prev_hash, block.txs)
    assert twin.hash != block.hash
    assert agent.status == "active"
    agent.replica.close()


AGENT_IMPORTS = """
import sys
import numpy as np
from bpcv.task import TaskSpec
from edge_agent.pool import AgentPool
from edge_agent.privacy.settings import PrivacySettings

pool = AgentPool([], threads=1)  # what `bpcv agent` builds, before any task
task = TaskSpec(task_id="t", coordinator="c", model="mlp:8", batch_size=16)
rng = np.random.default_rng(0)
x, y = rng.random((64, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 64)
for privacy in (None, PrivacySettings("laplace", 1.0, 1.0)):
    trainer = pool.trainer_for(task, (28, 28, 1), 10, privacy)
    trainer.train(trainer.model.get_weights(), x, y, seed=0)
print(sorted(m for m in ("pandas", "pyarrow", "sklearn", "tensorflow_probability") if m in sys.modules))
import pandas  # a device that reads CSV data still can
print("pandas" in sys.modules)
"""


def test_an_agent_process_loads_neither_pandas_nor_tensorflow_privacys_whole_api():
    """An agent trains with and without DP without importing pandas/pyarrow (which Keras would import for
    DataFrames) or tensorflow-privacy's umbrella API (scikit-learn, TensorFlow Probability): about 200 MiB
    of a device's memory (docs/DEPLOY.md). pandas stays importable for a device's CSV data."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", AGENT_IMPORTS],
        capture_output=True, text=True, check=False, timeout=300, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-3:-1] == ["[]", "True"], done.stdout
