"""Real TensorFlow training on a small slice of real MNIST, and what each behaviour publishes."""

import numpy as np
import pytest

from bpcv.data import load_dataset, make_shard
from bpcv.task import TaskSpec
from edge_agent import behaviours


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


def test_label_flip_training_scores_badly_on_honest_validation_data(trainer_and_data):
    trainer, shard = trainer_and_data
    flipped = behaviours.training_labels("label-flip", shard.y_train, 10)
    assert np.all(flipped == 9 - shard.y_train)
    weights, _ = trainer.train(trainer.model.get_weights(), shard.x_train, flipped, seed=1)
    assert trainer.evaluate(weights, shard.x_val, shard.y_val) < 0.2


def test_update_shaping_per_behaviour():
    rng = np.random.default_rng(0)
    g, w = [np.zeros(3, np.float32)], [np.ones(3, np.float32)]
    assert behaviours.shape_update("honest", g, w, rng)[0].tolist() == [1, 1, 1]
    assert behaviours.shape_update("free-ride", g, None, rng)[0].tolist() == [0, 0, 0]
    assert behaviours.shape_update("sign-flip", g, w, rng)[0].tolist() == [-4, -4, -4]
    assert not np.allclose(behaviours.shape_update("random-weights", g, None, rng)[0], 0)
    assert not behaviours.trains("free-ride") and behaviours.trains("label-flip")
    assert behaviours.shape_scores("lying-voter", {"a": 0.9, "b": 0.2}, True) == {"a": 0.1, "b": 0.8}
    assert behaviours.shape_scores("honest", {"a": 0.9}, True) == {"a": 0.9}
    with pytest.raises(ValueError, match="unknown behaviour"):
        behaviours.check_behaviour("evil")
