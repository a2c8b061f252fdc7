"""The baseline strategies of issue 16 (FedPAGE, Overlap-FedAvg, FLTrust) against hand computations on
small arrays, each with a case where plain FedAvg would give another model (the negative control), and
FLTrust's root data set and server training (TensorFlow, a tiny model)."""

import numpy as np
import pytest

from bpcv.errors import ConfigError
from coordinator.aggregate import fedavg, fltrust_scores
from coordinator.root_update import RootTrainer, root_indices, root_set, root_trainer
from coordinator.strategies import strategy_named
from coordinator.strategies.fedpage import FedPAGE
from coordinator.strategies.fltrust import FLTrust
from coordinator.strategies.overlap_fedavg import OverlapFedAvg


def model(*values: float) -> list[np.ndarray]:
    """A one-tensor model with the given coordinates."""
    return [np.array(values, np.float32)]


def page_round(page: FedPAGE, start: list[np.ndarray], updates: dict[str, list[np.ndarray]], counts: list[int]):
    chosen = page.select(list(updates), updates)
    return page.combine([updates[n] for n in chosen], counts, [0.5] * len(chosen), start)


def test_fedpage_full_round_then_page_corrections_by_hand():
    page = FedPAGE()
    assert [r for r in range(1, 13) if page.is_full(r)] == [1, 6, 11]  # p = 0.2
    # round 1 (full): deltas a = (2, 0) with 1 sample, b = (2, 4) with 3: v = (2 + 6, 0 + 12) / 4 = (2, 3)
    g1 = page_round(page, model(0, 0), {"a": model(2, 0), "b": model(2, 4)}, [1, 3])
    np.testing.assert_allclose(g1[0], [2, 3])
    # round 2: b is gone, c is new. Only a was in both rounds: its delta went from (2, 0) to
    # (3, 3) - (2, 3) = (1, 0), so v = (2, 3) + (1 - 2, 0 - 0) = (1, 3); c enters at the next full round
    g2 = page_round(page, g1, {"a": model(3, 3), "c": model(10, 10)}, [1, 2])
    np.testing.assert_allclose(g2[0], [3, 6])
    fedavg_instead = fedavg([model(3, 3), model(10, 10)], [1, 2])[0]  # (23/3, 23/3): the negative control
    assert not np.allclose(g2[0], fedavg_instead)
    # round 3: a and c were both in round 2. a: (3, 7) - (3, 6) = (0, 1), before (1, 0), change (-1, 1);
    # c: (5, 6) - (3, 6) = (2, 0), before (10, 10) - (2, 3) = (8, 7), change (-6, -7).
    # v = (1, 3) + (1 * (-1, 1) + 2 * (-6, -7)) / 3 = (1 - 13/3, 3 - 13/3) = (-10/3, -4/3)
    g3 = page_round(page, g2, {"a": model(3, 7), "c": model(5, 6)}, [1, 2])
    np.testing.assert_allclose(g3[0], [3 - 10 / 3, 6 - 4 / 3], rtol=1e-6)
    # rounds 4 and 5 keep the same nodes; round 6 is full again: v is its mean delta, the FedAvg model
    g = g3
    for _ in (4, 5):
        g = page_round(page, g, {"a": g, "c": g}, [1, 2])  # zero deltas
    g6 = page_round(page, model(0, 0), {"a": model(3, 0), "c": model(0, 3)}, [1, 2])
    np.testing.assert_allclose(g6[0], [1, 2])  # (1 * (3, 0) + 2 * (0, 3)) / 3


def test_fedpage_needs_the_global_model_and_its_own_selection():
    with pytest.raises(ValueError, match="global model"):
        FedPAGE().combine([model(1)], [1], [0.5])
    with pytest.raises(ValueError, match="its select chose"):
        FedPAGE().combine([model(1)], [1], [0.5], model(0))  # no select before it: it cannot pair deltas
    with pytest.raises(ValueError, match="at least 1"):
        FedPAGE(period=0)


def test_overlap_fedavg_momentum_by_hand():
    overlap = OverlapFedAvg()
    assert overlap.beta == 0.9
    # round 1: d1 = (1 * (1, 2) + 3 * (3, 2)) / 4 = (2.5, 2) = m1: the FedAvg model
    g1 = overlap.combine([model(1, 2), model(3, 2)], [1, 3], [0.5, 0.5], model(0, 0))
    np.testing.assert_allclose(g1[0], [2.5, 2])
    # round 2: deltas (1, 0) and (0, 2), d2 = (0.5, 1); m2 = 0.9 * (2.5, 2) + (0.5, 1) = (2.75, 2.8)
    g2 = overlap.combine([model(3.5, 2), model(2.5, 4)], [1, 1], [0.5, 0.5], g1)
    np.testing.assert_allclose(g2[0], [2.5 + 2.75, 2 + 2.8], rtol=1e-6)
    assert not np.allclose(g2[0], [3, 3])  # FedAvg's mean of the two updates: the negative control
    with pytest.raises(ValueError, match="global model"):
        OverlapFedAvg().combine([model(1)], [1], [0.5])


def test_fltrust_by_hand():
    seen = []

    def root_update(weights):  # the server's training: a delta of (3, 4), norm 5
        seen.append(weights)
        return [weights[0] + np.array([3, 4], np.float32)]

    start = model(1, 1)
    deltas = [(6, 8), (0, 2), (-3, -4), (4, -3)]
    updates = [model(1 + dx, 1 + dy) for dx, dy in deltas]
    strategy = FLTrust(root_update)
    out = strategy.combine(updates, [1, 100, 1, 1], [0.9, 0.1, 0.5, 0.5], start)
    assert len(seen) == 1 and np.array_equal(seen[0][0], start[0])  # trained from the round's global model
    # cosines with (3, 4): 1, 8 / (2 * 5) = 0.8, -1 and 0, so trust 1, 0.8, 0, 0. Rescaled to norm 5:
    # (6, 8) -> (3, 4), (0, 2) -> (0, 5). Aggregate (1 * (3, 4) + 0.8 * (0, 5)) / 1.8 = (5/3, 40/9)
    assert strategy.trust == pytest.approx([1.0, 0.8, 0.0, 0.0])
    np.testing.assert_allclose(out[0], [1 + 5 / 3, 1 + 40 / 9], rtol=1e-6)
    assert not np.allclose(out[0], fedavg(updates, [1, 100, 1, 1])[0])  # the negative control
    # only updates that point away or across: every trust is 0 and the global model stays
    np.testing.assert_array_equal(strategy.combine(updates[2:], [1, 1], [0.5, 0.5], start)[0], start[0])
    # the cosine is over all tensors at once: (3 | 4) against (3 | -4) is (9 - 16) / 25 < 0, trust 0
    two = [np.array([3.0]), np.array([4.0])]
    assert fltrust_scores([two, [np.array([3.0]), np.array([-4.0])]], two) == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError, match="global model"):
        strategy.combine(updates, [1] * 4, [0.5] * 4)


def test_fltrust_is_named_only_with_a_root_update():
    with pytest.raises(ConfigError, match="fltrust.*root data set"):
        strategy_named("fltrust")
    assert isinstance(strategy_named("fltrust", root_update=lambda w: w), FLTrust)
    assert isinstance(strategy_named("fedpage"), FedPAGE) and isinstance(
        strategy_named("overlap-fedavg"), OverlapFedAvg
    )


def test_root_set_is_class_balanced():
    y = np.repeat(np.arange(10), [500, 50, 50, 50, 50, 50, 50, 50, 50, 3]).astype(np.int64)
    x = np.arange(len(y)) * 10
    rx, ry = root_set(x, y)
    assert len(ry) == 100 and np.array_equal(ry, y[rx // 10])  # inputs and labels stay paired
    counts = np.bincount(ry, minlength=10)
    # class 9 has only 3 records: all taken, its missing 7 spread over the others (10 or 11 each)
    assert counts[9] == 3 and set(counts[:9]) <= {10, 11} and counts.sum() == 100
    even = np.repeat(np.arange(10), 40).astype(np.int64)
    assert list(np.bincount(even[root_indices(even)], minlength=10)) == [10] * 10
    assert np.array_equal(root_indices(y, seed=1), root_indices(y, seed=1))  # the seed fixes the choice
    assert len(set(root_indices(np.linspace(0, 1, 500)))) == 100  # regression targets: 100 distinct records
    assert list(root_indices(np.arange(5), size=100)) == [0, 1, 2, 3, 4]  # too few: all of them


def test_root_trainer_trains_the_tasks_model_from_the_global_weights():
    from bpcv.models import build_model, configure_tensorflow
    from bpcv.task import TaskSpec

    configure_tensorflow(2)
    task = TaskSpec(task_id="t", coordinator="c", model="mlp:8", local_epochs=1, batch_size=16, learning_rate=0.1)
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int64)
    start = [np.asarray(w, np.float32) for w in build_model("mlp:8", (28, 28), 10, seed=3).get_weights()]
    trainer = RootTrainer(task, x, y, num_classes=10)
    trained = trainer(start)
    assert [w.shape for w in trained] == [w.shape for w in start] and all(w.dtype == np.float32 for w in trained)
    assert all(not np.array_equal(a, b) for a, b in zip(trained, start, strict=True))  # every tensor moved
    again = RootTrainer(task, x, y, num_classes=10)(start)
    assert all(np.array_equal(a, b) for a, b in zip(trained, again, strict=True))  # same seed, same weights
    # as FLTrust's root update: the rescaled delta of an update that is the root's own has trust 1
    out = FLTrust(RootTrainer(task, x, y, num_classes=10)).combine([trained], [1], [0.5], start)
    for got, want in zip(out, trained, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_root_trainer_is_built_for_an_fltrust_task_with_test_data_only():
    from bpcv.task import TaskSpec

    x, y = np.zeros((300, 4), np.float32), np.repeat(np.arange(3), 100).astype(np.int64)
    fltrust_task = TaskSpec(task_id="t", coordinator="c", strategy="fltrust")
    trainer = root_trainer(fltrust_task, x, y, 3)
    assert isinstance(trainer, RootTrainer) and sorted(np.bincount(trainer.y)) == [33, 33, 34]
    assert trainer.epochs == fltrust_task.local_epochs  # the server trains like the clients
    assert root_trainer(fltrust_task, None, None, 3) is None  # no test data: strategy_named says why
    assert root_trainer(TaskSpec(task_id="t", coordinator="c"), x, y, 3) is None  # another strategy
