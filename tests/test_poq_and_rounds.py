"""Pure round logic: quality rules, ranking, PoQ winner, elimination, admission, rewards, FedAvg."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcv.errors import ConfigError
from bpcv.poq import poq_winner, quality_scores, rank_nodes
from bpcv.task import TaskSpec
from coordinator.aggregate import fedavg
from coordinator.rounds import decide_round, split_reward
from coordinator.strategies import STRATEGIES, strategy_named
from coordinator.strategies.bpcv import Bpcv
from coordinator.strategies.fedavg import FedAvg


def test_quality_ignores_self_scores_and_mean_matches_the_papers_sum_ranking():
    votes = {"a": {"a": 1.0, "b": 0.8, "c": 0.2}, "b": {"a": 0.9, "c": 0.3}, "c": {"a": 0.7, "b": 0.6}}
    q = quality_scores(votes, "mean")
    assert q == pytest.approx({"a": 0.8, "b": 0.7, "c": 0.25})
    sums = {n: sum(v[n] for voter, v in votes.items() if n in v and voter != n) for n in q}
    assert rank_nodes(q, "accuracy") == sorted(sums, key=lambda n: -sums[n])


def test_median_resists_a_lying_minority_where_the_mean_does_not():
    """7 nodes, 2 colluders (< N/3): 'bad' sent a subtly poisoned model (honest peers score it 0.6);
    'bad' and 'l1' score honest h0 at 0 and 'bad' at 1. The mean eliminates h0; the median, 'bad'."""
    honest = [f"h{i}" for i in range(5)]
    everyone = honest + ["bad", "l1"]
    votes = {h: {t: (0.6 if t == "bad" else 0.9) for t in everyone if t != h} for h in honest}
    for liar in ("bad", "l1"):
        votes[liar] = {t: (0.0 if t == "h0" else 1.0 if t == "bad" else 0.9) for t in everyone if t != liar}
    assert rank_nodes(quality_scores(votes, "mean"), "accuracy")[-1] == "h0"
    assert rank_nodes(quality_scores(votes, "median"), "accuracy")[-1] == "bad"


def task(**fields) -> TaskSpec:
    return TaskSpec(task_id="t", coordinator="coordinator", **fields)


def decide(roster, valid, invalid, votes, standby, spec, strategy=None):
    return decide_round(
        task=spec,
        strategy=strategy or Bpcv(),
        roster=roster,
        valid_updates=valid,
        invalid_updates=invalid,
        votes=votes,
        standby=standby,
    )


def test_ranking_is_deterministic_on_ties_and_mae_ranks_low_first():
    assert rank_nodes({"b": 0.5, "a": 0.5, "c": 0.9}, "accuracy") == ["c", "a", "b"]
    assert rank_nodes({"b": 2.0, "a": 1.0}, "mae") == ["a", "b"]
    assert poq_winner({}, "accuracy") is None


def test_worst_is_excluded_eliminated_and_fastest_standby_admitted():
    roster = ["a", "b", "c", "d"]
    votes = {v: {t: (0.1 if t == "d" else 0.9) for t in roster if t != v} for v in roster}
    out = decide(roster, roster, {}, votes, ["s2", "s1"], task(nodes=4, min_nodes=2))
    assert out.excluded == ["d"] and out.eliminated == "d" and "d" not in out.aggregated
    assert out.admitted == ["s2"] and out.next_roster == ["a", "b", "c", "s2"]
    assert "d" not in out.rewards
    assert sum(out.rewards.values()) == pytest.approx(100.0)


def test_missing_update_is_dropped_invalid_is_eliminated_and_min_nodes_is_kept():
    votes = {"a": {"b": 0.9}, "b": {"a": 0.8}}
    out = decide(["a", "b", "c", "x"], ["a", "b"], {"x": "non-finite"}, votes, [], task(nodes=4, min_nodes=2))
    assert out.dropped == ["c"] and out.invalid == {"x": "non-finite"}
    assert out.excluded == ["a"] and out.eliminated is None  # only 2 left: excluded, not eliminated
    assert out.next_roster == ["a", "b"]


def test_reward_split_follows_quality_and_inverse_mae():
    assert split_reward({"a": 0.75, "b": 0.25}, ["a", "b"], "accuracy", 100) == {"a": 75.0, "b": 25.0}
    assert split_reward({"a": 1.0, "b": 3.0}, ["a", "b"], "mae", 100) == {"a": 75.0, "b": 25.0}


def test_fedavg_weights_by_sample_count():
    a, b = [np.zeros(2, np.float32)], [np.ones(2, np.float32)]
    assert np.allclose(fedavg([a, b], [1, 3])[0], [0.75, 0.75])
    with pytest.raises(ValueError):
        fedavg([], [])


@given(
    n=st.integers(4, 13),
    data=st.data(),
)
@settings(max_examples=300, deadline=None)
def test_median_rule_holds_against_any_colluding_minority(n, data):
    """Any k < N/3 colluders, scoring anything in [0, 1], with the poisoned node among them or not:
    under the median rule the poisoned update is excluded and eliminated and no honest node is, as long
    as honest voters score the poisoned update below every honest one."""
    nodes = [f"n{i:02d}" for i in range(n)]
    k = data.draw(st.integers(1, (n - 1) // 3), label="k")
    liars = set(data.draw(st.permutations(nodes), label="order")[:k])
    poisoned = data.draw(st.sampled_from(sorted(liars) + [nodes[0]] * (nodes[0] not in liars)), label="poisoned")
    honest_low = data.draw(st.floats(0.5, 0.95), label="lowest honest score")
    unit = st.floats(0, 1)
    votes = {}
    for voter in nodes:
        if voter in liars:
            votes[voter] = {t: data.draw(unit) for t in nodes if t != voter}
        else:  # honest: the poisoned update scores below every honest model
            votes[voter] = {
                t: data.draw(st.floats(0, honest_low - 0.01)) if t == poisoned else data.draw(st.floats(honest_low, 1))
                for t in nodes
                if t != voter
            }
    out = decide(nodes, nodes, {}, votes, ["standby"], task(nodes=n, min_nodes=2, quality_rule="median"))
    assert out.eliminated == poisoned and poisoned not in out.aggregated
    assert all(h in out.aggregated for h in nodes if h != poisoned)


def test_strategies_select_and_combine_as_computed_by_hand():
    a = [np.array([[1.0, 2.0]], np.float32), np.array([0.0], np.float32)]
    b = [np.array([[3.0, 6.0]], np.float32), np.array([4.0], np.float32)]
    # FedAvg keeps every ranked update; weights 1/4 and 3/4: [[2.5, 5.0]], [3.0]
    assert FedAvg().select(["a", "b", "c"], {}) == ["a", "b", "c"]
    combined = FedAvg().combine([a, b], [1, 3], [0.9, 0.8])
    assert np.allclose(combined[0], [[2.5, 5.0]]) and np.allclose(combined[1], [3.0])
    # BPCV leaves the lowest-ranked out (not when it is alone), then averages by data size the same way
    assert Bpcv().select(["a", "b", "c"], {}) == ["a", "b"] and Bpcv().select(["a"], {}) == ["a"]
    assert np.allclose(Bpcv().combine([a, b], [3, 1], [0.9, 0.8])[0], [[1.5, 3.0]])
    assert isinstance(strategy_named("fedavg"), FedAvg)
    with pytest.raises(ConfigError, match="unknown aggregation strategy 'krum'"):
        strategy_named("krum")


def test_fedavg_strategy_excludes_nobody_but_the_worst_is_still_eliminated():
    roster = ["a", "b", "c", "d"]
    votes = {v: {t: (0.1 if t == "d" else 0.9) for t in roster if t != v} for v in roster}
    out = decide(roster, roster, {}, votes, [], task(nodes=4, min_nodes=2), strategy=FedAvg())
    assert out.excluded == [] and out.aggregated[-1] == "d" and out.eliminated == "d"


def test_without_supervision_every_valid_update_is_combined_and_nobody_ranked_eliminated_or_paid():
    roster = ["a", "b", "c", "d"]
    plain = task(nodes=4, min_nodes=2, strategy="fedavg", supervised=False)
    out = decide(roster, ["a", "b", "d"], {}, {}, ["s1"], plain, strategy=FedAvg())
    assert out.aggregated == ["a", "b", "d"] and out.ranking == [] and out.proposer is None
    assert out.eliminated is None and out.rewards == {} and out.dropped == ["c"]
    supervised = decide(roster, ["a", "b", "d"], {}, {}, ["s1"], task(nodes=4, min_nodes=2), strategy=FedAvg())
    assert supervised.aggregated == []  # the control: with supervision and no votes, nothing is ranked to combine
    with pytest.raises(ConfigError, match="needs a strategy other than bpcv"):
        task(supervised=False).validate()
    assert (
        "supervised" not in task().to_body()
        and task(strategy="fedavg", supervised=False).to_body()["supervised"] is False
    )


def test_reward_shares_never_sum_above_the_reward():
    # rounding each share to nearest gave 6 x 0.166667 = 1.000002 > 1, which the chain refuses
    shares = split_reward({n: 0.9 for n in "abcdef"}, list("abcdef"), "accuracy", 1.0)
    assert set(shares.values()) == {0.166666} and sum(shares.values()) <= 1.0
