"""Peer scoring through a cached fixed feature map scores exactly the model received."""

from __future__ import annotations

import numpy as np
import pytest

from bpcv.metrics import ACTIVATION_BUDGET, MAX_BATCH, batch_for, predict
from bpcv.models import build_model
from bpcv.task import TaskSpec
from edge_agent.privacy.settings import PrivacySettings
from edge_agent.trainer import Trainer


def _peer(weights: list[np.ndarray], fixed: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A peer's model: the trainable weights moved, the fixed ones as the task built them."""
    return [w if i < fixed else w + rng.normal(0, 0.5, w.shape).astype(np.float32) for i, w in enumerate(weights)]


def test_cached_features_give_the_whole_models_outputs_and_a_changed_feature_map_is_scored_whole():
    task = TaskSpec(task_id="t", coordinator="c", model="wavelet:2,4,7")
    trainer = Trainer(task, (28, 28, 1), 10)
    plain = Trainer(task, (28, 28, 1), 10, cache_features=False)
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    prefix = trainer.prefix
    assert prefix.usable and prefix.fixed_count == 2  # the wavelet filters and their modulus
    for _ in range(3):
        peer = _peer(trainer.model.get_weights(), prefix.fixed_count, rng)
        assert prefix.applies_to(peer)
        trainer.model.set_weights(peer)
        np.testing.assert_allclose(prefix.predict_head(x), predict(trainer.model, x), atol=1e-6)
    # a peer that sends another feature map is scored through it, not through the cached features
    forged = _peer(trainer.model.get_weights(), prefix.fixed_count, rng)
    forged[0] = np.zeros_like(forged[0])
    assert not prefix.applies_to(forged)
    trainer.model.set_weights(forged)
    whole = predict(trainer.model, x)
    assert np.abs(whole - prefix.predict_head(x)).max() > 1e-3  # the cache would have scored the wrong model
    accuracy = float(np.mean(np.argmax(whole, axis=1) == y))
    assert trainer.evaluate(forged, x, y) == accuracy == plain.evaluate(forged, x, y)
    assert trainer.evaluate(peer, x, y) == plain.evaluate(peer, x, y)


def test_predict_runs_the_models_own_forward_pass_at_any_batch_size_and_lets_the_model_go():
    """Scoring traces the model's forward pass once instead of calling Keras eagerly per peer: the same
    outputs as the eager call (BatchNormalization and Dropout in inference mode), for every batch size,
    after new weights are set, and the traced function does not keep a discarded model alive."""
    import gc
    import weakref

    import tensorflow as tf

    inputs = tf.keras.Input((6,))
    hidden = tf.keras.layers.BatchNormalization()(tf.keras.layers.Dense(8, activation="relu")(inputs))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(tf.keras.layers.Dropout(0.5)(hidden)))
    rng = np.random.default_rng(2)
    for rows in (5, 17, 9000):  # 9000: three slices of predict's 4096
        x = rng.normal(size=(rows, 6)).astype(np.float32)
        model.set_weights([w + rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
        np.testing.assert_allclose(predict(model, x), model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_a_convolutional_model_is_scored_in_batches_its_activations_fit_and_gives_the_same_outputs():
    """A convolution's output over 4,096 MNIST records is 205 MB: predict sizes its batches by the model's
    widest layer output, so a CNN's batch stays within the activation budget (an MLP's is many times
    larger), and the outputs over several batches are the eager call's."""
    cnn = build_model("cnn:16,32", (28, 28, 1), 10)
    widest = max(int(np.prod(layer.output.shape[1:])) for layer in cnn.layers)
    assert widest == 28 * 28 * 16  # the first convolution's output, per record
    assert batch_for(cnn) * widest * 4 <= ACTIVATION_BUDGET < (batch_for(cnn) + 1) * widest * 4
    assert 10 * batch_for(cnn) < batch_for(build_model("mlp:128", (28, 28, 1), 10)) <= MAX_BATCH
    x = np.random.default_rng(3).random((batch_for(cnn) * 2 + 7, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(predict(cnn, x), cnn(x, training=False).numpy(), rtol=1e-4, atol=1e-5)


def test_a_model_that_learns_from_its_first_layer_has_no_fixed_prefix():
    for model in ("cnn:4", "mlp:8"):  # mlp's Flatten has no weights: nothing worth caching
        trainer = Trainer(TaskSpec(task_id="t", coordinator="c", model=model), (28, 28, 1), 10)
        assert not trainer.prefix.usable and trainer.trained is trainer.model


def test_training_on_cached_features_takes_the_same_steps_as_the_whole_model():
    """Without DP and with GD-DP: the same steps through the head as through the whole model (the frozen
    map has no gradient); the frozen weights stay as they were. One full batch without DP and no noise
    with DP, so that TensorFlow's op-level random streams (which differ between two models) play no part;
    DP's Poisson batches come from numpy and are the same."""
    rng = np.random.default_rng(1)
    x = rng.random((96, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    for privacy, batch in ((None, 96), (PrivacySettings("gaussian", 0.5, noise_multiplier=0.0), 32)):
        task = TaskSpec(task_id="t", coordinator="c", model="wavelet:2,4,7", batch_size=batch, local_epochs=1)
        cached = Trainer(task, (28, 28, 1), 10, privacy)
        whole = Trainer(task, (28, 28, 1), 10, privacy, cache_features=False)
        assert not whole.cached and whole.trained is whole.model
        start = cached.model.get_weights()
        a, _ = cached.train(start, x, y, seed=5)
        b, _ = whole.train(start, x, y, seed=5)
        assert cached.cached
        for wa, wb in zip(a, b, strict=True):
            np.testing.assert_allclose(wa, wb, atol=2e-5)
        np.testing.assert_array_equal(a[0], start[0])
        assert np.abs(a[-1] - start[-1]).max() > 1e-4  # the head moved


def test_the_coordinators_contribution_check_passes_real_training_and_refuses_real_free_riders():
    """``bpcv.models.fixed_weights`` marks the wavelet map and nothing else; an honest round of real
    training keeps it and moves the rest (accepted), the free-ride behaviours' updates are refused (but
    for the mimic's: the check's known limit); a trainable batch-norm layer's moving statistics count as
    trained."""
    import tensorflow as tf

    from bpcv.errors import Rejected
    from bpcv.models import fixed_weights
    from coordinator.collector import check_contribution
    from edge_agent.behaviours import create

    task = TaskSpec(task_id="t", coordinator="c", model="wavelet:2,4,7", batch_size=32, local_epochs=1)
    trainer = Trainer(task, (28, 28, 1), 10)
    fixed = fixed_weights(trainer.model)
    assert fixed == [True] * trainer.prefix.fixed_count + [False] * (len(fixed) - trainer.prefix.fixed_count)
    assert not any(fixed_weights(Trainer(TaskSpec(task_id="t", coordinator="c", model="mlp:8"), (28, 28, 1), 10).model))
    norm = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.BatchNormalization(), tf.keras.layers.Dense(2)])
    assert fixed_weights(norm) == [False] * 6
    rng = np.random.default_rng(2)
    x, y = rng.random((64, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 64)
    start = trainer.model.get_weights()
    trained, _ = trainer.train(start, x, y, seed=1)
    check_contribution(trained, start, fixed)  # accepted: raises nothing
    for name, reason in (("free-ride", "no-training"), ("free-ride-noise", "fixed-weights-changed")):
        with pytest.raises(Rejected) as refused:
            check_contribution(create(name).shape_update(start, None, rng), start, fixed)
        assert refused.value.reason == reason, name
    # the limit of the check: a free-rider that trained once knows which tensors training moves, and its
    # noise on exactly those passes (docs/RELIABILITY.md, Free-riders; the votes are what may catch it)
    mimic = create("free-ride-mimic")
    assert mimic.shape_update(start, trained, rng) is trained  # its one round of training, honest
    check_contribution(mimic.shape_update(trained, None, rng), trained, fixed)  # accepted: raises nothing


def test_the_coordinator_scores_each_global_model_through_test_set_features_computed_once(monkeypatch):
    """The coordinator's test-set metric of a round's global model is the whole model's, but the fixed
    wavelet map runs over the test set once per task, not every round; a global model with another map
    (none should have one: updates that change it are refused) is scored whole."""
    import bpcv.fixed_prefix
    from bpcv.models import build_model
    from coordinator.evaluation import TEST_SET, Evaluation

    task = TaskSpec(task_id="t", coordinator="c", model="wavelet:2,4,7")
    rng = np.random.default_rng(3)
    x, y = rng.random((96, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 96)
    evaluation = Evaluation(task, TEST_SET, build_model(task.model, (28, 28, 1), 10, seed=0), x, y)
    whole = Trainer(task, (28, 28, 1), 10, cache_features=False)
    prefix = evaluation.prefix
    ran: list[str] = []
    names = {id(prefix.features): "map", id(prefix.head): "head", id(evaluation.model): "whole"}
    real_predict = bpcv.fixed_prefix.predict
    monkeypatch.setattr(
        bpcv.fixed_prefix,
        "predict",
        lambda model, data: ran.append(names.get(id(model), "other")) or real_predict(model, data),
    )
    for _ in range(3):
        weights = _peer(evaluation.model.get_weights(), prefix.fixed_count, rng)
        assert evaluation(weights, {}, {}) == whole.evaluate_all(weights, x, y)
    ran[:] = [r for r in ran if r != "other"]  # the reference Trainer's own calls
    assert ran == ["map", "head", "head", "head"]
    forged = _peer(evaluation.model.get_weights(), prefix.fixed_count, rng)
    forged[0] = np.zeros_like(forged[0])
    assert evaluation(forged, {}, {}) == whole.evaluate_all(forged, x, y)
    assert [r for r in ran[4:] if r != "other"] == ["whole"]
