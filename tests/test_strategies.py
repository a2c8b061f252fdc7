"""The robust aggregation strategies against hand computations on small arrays."""

import numpy as np
import pytest

from coordinator.aggregate import coordinate_median, krum_scores, trimmed_mean
from coordinator.strategies import STRATEGIES, strategy_named
from coordinator.strategies.krum import MultiKrum, tolerated
from coordinator.strategies.median import Median
from coordinator.strategies.trimmed_mean import TrimmedMean


def model(*values: float) -> list[np.ndarray]:
    """A one-tensor model with the given coordinates."""
    return [np.array(values, np.float32)]


def test_coordinate_median_by_hand():
    out = coordinate_median([model(1, 2), model(3, 6), model(100, -50)])
    np.testing.assert_array_equal(out[0], [3, 2])  # each coordinate's own middle value
    np.testing.assert_array_equal(coordinate_median([model(1), model(3)])[0], [2])  # even: mean of the middle two
    # the strategy ignores sample counts and quality
    np.testing.assert_array_equal(Median().combine([model(1), model(5), model(9)], [100, 1, 1], [0, 0, 0])[0], [5])


def test_trimmed_mean_by_hand():
    updates = [model(1, 3), model(2, -50), model(3, 0), model(4, 1), model(100, 2)]
    # coordinate 0: 1, 2, 3, 4, 100 without 1 and 100 -> 3; coordinate 1: -50, 0, 1, 2, 3 without -50 and 3 -> 1
    np.testing.assert_allclose(trimmed_mean(updates, 1)[0], [3, 1])
    np.testing.assert_allclose(TrimmedMean().combine(updates, [1] * 5, [0] * 5)[0], [3, 1])  # floor(0.2 * 5) = 1
    np.testing.assert_allclose(TrimmedMean().combine(updates[:4], [1] * 4, [0] * 4)[0], [2.5, -11.5])  # trims 0
    with pytest.raises(ValueError, match="more than 2 updates"):
        trimmed_mean(updates[:2], 1)


def test_krum_scores_and_multi_krum_by_hand():
    updates = [model(0), model(1), model(2), model(3), model(50)]
    # n = 5, f = 1: each score sums the squared distances to the 5 - 1 - 2 = 2 nearest others
    assert tolerated(5) == 1 and tolerated(4) == 0 and tolerated(2) == 0
    assert krum_scores(updates, 1) == [5.0, 2.0, 2.0, 5.0, (50 - 3) ** 2 + (50 - 2) ** 2]
    # Multi-Krum selects n - f = 4 (the outlier at 50 is left out, whatever its rank) and averages them
    # by sample count
    named = dict(zip("abcde", updates, strict=True))
    assert MultiKrum().select(["e", "a", "b", "c", "d"], named) == ["a", "b", "c", "d"]
    assert MultiKrum().select(["e", "a"], named) == ["e", "a"]  # too few to judge: all kept
    np.testing.assert_allclose(MultiKrum().combine(updates[:4], [1] * 4, [0] * 4)[0], [1.5])
    np.testing.assert_allclose(MultiKrum().combine(updates[:4], [1, 1, 1, 3], [0] * 4)[0], [2.0])
    with pytest.raises(ValueError, match="at least 5 updates"):
        krum_scores(updates[:4], 1)


def test_every_strategy_is_named_and_combines_a_whole_model():
    assert sorted(STRATEGIES) == [
        "bpcv",
        "fedavg",
        "fedpage",
        "fltrust",
        "median",
        "multi-krum",
        "overlap-fedavg",
        "trimmed-mean",
    ]
    updates = [[np.full((2, 3), float(k), np.float32), np.full((3,), -float(k), np.float32)] for k in range(6)]
    start = [np.zeros((2, 3), np.float32), np.zeros((3,), np.float32)]  # the round's global model
    named = {str(k): u for k, u in enumerate(updates)}
    for name in STRATEGIES:
        strategy = strategy_named(name, root_update=lambda w: [t + 1 for t in w])  # FLTrust's server training
        chosen = strategy.select(list(named), named)
        assert chosen and set(chosen) <= set(named), name
        out = strategy.combine([named[n] for n in chosen], [1] * len(chosen), [0.5] * len(chosen), start)
        assert [w.shape for w in out] == [(2, 3), (3,)] and all(w.dtype == np.float32 for w in out), name


def test_the_task_names_its_strategy_and_travels_as_before_with_the_papers():
    from bpcv.errors import ConfigError
    from bpcv.task import STRATEGIES as TASK_STRATEGIES
    from bpcv.task import TaskSpec

    assert sorted(TASK_STRATEGIES) == sorted(STRATEGIES)  # the kernel's list is the coordinator's registry
    paper = TaskSpec(task_id="t", coordinator="c")
    assert "strategy" not in paper.to_body()  # the paper's rule: the task's bytes are unchanged
    krum = TaskSpec(task_id="t", coordinator="c", strategy="multi-krum")
    assert krum.to_body()["strategy"] == "multi-krum" and TaskSpec.from_body(krum.to_body()) == krum
    with pytest.raises(ConfigError, match="strategy must be one of"):
        TaskSpec.from_body({**paper.to_body(), "strategy": "krum"})


def test_a_round_under_multi_krum_records_and_pays_only_the_updates_krum_kept():
    """The outlier update is ranked first by (lying) votes, yet Krum leaves it out: the round result
    says so (excluded) and it is not paid; the votes still decide who is eliminated."""
    from bpcv.task import TaskSpec
    from coordinator.rounds import decide_round

    roster = ["a", "b", "c", "d", "e"]
    updates = dict(zip(roster, [model(50), model(0), model(1), model(2), model(3)], strict=True))
    votes = {v: {t: (0.99 if t == "a" else 0.9 - 0.1 * roster.index(t)) for t in roster if t != v} for v in roster}
    out = decide_round(
        task=TaskSpec(task_id="t", coordinator="c", nodes=5, min_nodes=2, strategy="multi-krum"),
        strategy=MultiKrum(),
        roster=roster,
        valid_updates=roster,
        invalid_updates={},
        votes=votes,
        standby=[],
        updates=updates,
    )
    assert out.ranking[0] == "a" and out.excluded == ["a"] and "a" not in out.aggregated
    assert "a" not in out.rewards and set(out.rewards) == {"b", "c", "d", "e"}
    assert out.eliminated == "e"  # the lowest-quality by the votes
