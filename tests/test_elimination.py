"""Elimination policies and accountable voters, pure: who is an outlier, who dissents, who is eliminated
and paid (coordinator.rounds), and that a replica re-derives the same (ledger.validate, verify_replica)."""

from __future__ import annotations

import pytest

from bpcv.errors import ConfigError
from bpcv.poq import dissenting_voters, outliers, quality_scores, ranks_agree, round_quality
from bpcv.task import TaskSpec
from coordinator.rounds import decide_round
from coordinator.strategies.fedavg import FedAvg

HONEST = {f"h{i}": 0.90 + 0.002 * i for i in range(8)}  # honest qualities within 1.4 points


def _task(**kw: object) -> TaskSpec:
    return TaskSpec(task_id="t", coordinator="c", nodes=10, min_nodes=2, **kw)  # type: ignore[arg-type]


def _votes(truth: dict[str, float], liars: dict[str, object] = {}) -> dict[str, dict[str, float]]:  # noqa: B006
    """Every node scores every other with its true quality; a liar's scores come from ``liars[node](truth)``."""
    votes = {}
    for voter in truth:
        honest = {t: q for t, q in truth.items() if t != voter}
        votes[voter] = liars[voter](honest) if voter in liars else honest  # type: ignore[operator]
    return votes


def _decide(
    task: TaskSpec,
    votes: dict[str, dict[str, float]],
    before: tuple[str, ...] = (),
    streaks: dict[str, int] | None = None,
):
    nodes = sorted(votes)
    return decide_round(
        task=task,
        strategy=FedAvg(),
        roster=nodes,
        valid_updates=nodes,
        invalid_updates={},
        votes=votes,
        standby=[],
        dissented_before=before,
        outlier_streaks=streaks,
    )


def test_outliers_are_the_clearly_worse_worst_first_and_an_honest_spread_has_none():
    assert outliers(HONEST, "accuracy") == []
    assert outliers({**HONEST, "bad": 0.10, "meh": 0.80}, "accuracy") == ["bad", "meh"]
    assert outliers({**HONEST, "close": 0.87}, "accuracy") == []  # 3.9 points under the median: within 5%
    # MAE: higher is worse, and the share is of the median MAE
    assert outliers({"a": 1.0, "b": 1.02, "c": 0.98, "d": 1.6}, "mae") == ["d"]
    assert outliers({"a": 1.0, "b": 0.5}, "accuracy") == []  # two nodes: no majority to compare with


def test_paper_policy_eliminates_an_honest_node_every_round_the_outlier_policy_does_not():
    votes = _votes(HONEST)
    paper = _decide(_task(), votes)
    assert paper.eliminated == "h0" and paper.eliminated_reason == "lowest-quality"
    outlier = _decide(_task(elimination="outlier"), votes)
    assert outlier.eliminated is None and outlier.aggregated == outlier.ranking
    none = _decide(_task(elimination="none"), _votes({**HONEST, "bad": 0.1}))
    assert none.eliminated is None


def test_outlier_policy_leaves_every_outlier_out_at_once_and_eliminates_the_worst_repeated_one():
    votes, task = _votes({**HONEST, "bad": 0.1, "worse": 0.05}), _task(elimination="outlier")
    first = _decide(task, votes)
    assert first.eliminated is None and first.outliers == ["worse", "bad"]  # one bad round: left out, not removed
    assert set(first.excluded) == {"bad", "worse"} and "bad" not in first.rewards
    assert first.outlier_streaks == {"worse": 1, "bad": 1}
    second = _decide(task, votes, streaks=first.outlier_streaks)
    assert second.eliminated is None and second.outlier_streaks == {"worse": 2, "bad": 2}  # two: not yet
    third = _decide(task, votes, streaks=second.outlier_streaks)
    assert third.eliminated == "worse" and third.eliminated_reason == "outlier"
    only_bad_running = _decide(task, votes, streaks={"bad": 2, "worse": 1})
    assert only_bad_running.eliminated == "bad"


def test_an_outlier_streak_ends_with_a_round_that_is_not_one_and_stands_when_too_few_are_ranked():
    task = _task(elimination="outlier")
    recovered = _decide(task, _votes({**HONEST, "bad": 0.1}), streaks={"bad": 2, "h3": 2})
    assert recovered.eliminated == "bad" and recovered.outlier_streaks == {"bad": 3}  # h3's streak is over
    again = _decide(task, _votes({**HONEST, "h3": 0.1}), streaks=recovered.outlier_streaks)
    assert again.eliminated is None and again.outlier_streaks == {"h3": 1}
    too_few = _decide(task, _votes({"a": 0.9, "b": 0.1}), streaks={"b": 2})
    assert too_few.eliminated is None and too_few.outlier_streaks == {"b": 2}


def reverse(scores: dict[str, float]) -> dict[str, float]:
    return {t: 1.0 - s for t, s in scores.items()}


def test_a_reversing_voter_dissents_is_unpaid_and_its_votes_do_not_count():
    truth = {**HONEST, "bad": 0.1}
    votes = _votes(truth, {"h7": reverse})
    assert dissenting_voters(votes, "accuracy") == ["h7"]
    quality, dissenters = round_quality(votes, "accuracy", "mean", "rank-aware")
    assert dissenters == ["h7"] and quality["bad"] == pytest.approx(0.1)  # the liar's 0.9 for "bad" dropped
    counted, _ = round_quality(votes, "accuracy", "mean", None)
    assert counted["bad"] > 0.17  # negative control: without accountability the lie lifts "bad"
    outcome = _decide(_task(accountable_voters=True), votes)
    assert outcome.dissenters == ["h7"] and "h7" in outcome.aggregated and "h7" not in outcome.rewards
    assert outcome.eliminated == "bad"  # a first dissent costs the pay, not the membership


def test_dissenting_two_rounds_running_eliminates_the_voter_before_the_lowest():
    votes = _votes(HONEST, {"h7": reverse})
    outcome = _decide(_task(accountable_voters=True), votes, before=("h7",))
    assert outcome.eliminated == "h7" and outcome.eliminated_reason == "dissenting-voter"
    outcome = _decide(_task(accountable_voters=True, elimination="outlier"), votes, before=("h7",))
    assert outcome.eliminated == "h7"


def test_honest_noise_and_a_constant_offset_within_the_floor_do_not_dissent():
    votes = _votes(HONEST)
    votes["h3"] = {t: s - 0.1 for t, s in votes["h3"].items()}  # a voter whose data is harder: 10 points lower
    assert dissenting_voters(votes, "accuracy") == []
    assert dissenting_voters({"a": {"b": 0.1}, "b": {"a": 0.9}}, "accuracy") == []  # two voters: no majority


def offset(by: float):
    return lambda scores: {t: s - by for t, s in scores.items()}


def reversed_below(by: float):
    """Scores about ``by`` under the true ones, in the reverse order."""
    return lambda scores: {
        t: round(max(scores.values()) - by - (q - min(scores.values())), 6) for t, q in scores.items()
    }


def test_a_voter_past_the_limit_that_orders_its_peers_alike_is_excused_only_by_the_rank_aware_rule():
    """25 points under the others on every peer (past the 0.2 floor, within twice it), in the same order:
    unusual data, not a lie, under "rank-aware"; a dissenter by distance alone under "distance" (tasks from
    before the rule). The same distance with the order reversed, or 45 points off, dissents under both."""
    skewed = _votes(HONEST, {"h3": offset(0.25)})
    assert dissenting_voters(skewed, "accuracy", "rank-aware") == []
    assert dissenting_voters(skewed, "accuracy", "distance") == ["h3"]
    reversed_near = _votes(HONEST, {"h3": reversed_below(0.25)})
    assert dissenting_voters(reversed_near, "accuracy", "rank-aware") == ["h3"]
    far = _votes(HONEST, {"h3": offset(0.45)})
    assert dissenting_voters(far, "accuracy", "rank-aware") == ["h3"]
    assert round_quality(skewed, "accuracy", "mean", None) == (quality_scores(skewed, "mean"), [])
    with pytest.raises(ValueError, match="dissent rule"):
        dissenting_voters(skewed, "accuracy", "nearest")


def test_ranks_agree_is_the_sign_of_spearmans_correlation_ties_included():
    assert ranks_agree([1, 2, 3, 4], [10, 20, 30, 40])
    assert not ranks_agree([1, 2, 3, 4], [40, 30, 20, 10])
    assert ranks_agree([1, 1, 2, 3], [5, 6, 7, 8])  # a tie in one: still alike
    assert not ranks_agree([1, 2, 3, 4], [7, 7, 7, 7])  # constant: no evidence of agreement
    assert not ranks_agree([1, 2, 1, 2], [1, 1, 2, 2])  # correlation exactly 0: not above it
    assert not ranks_agree([1, 2], [1, 2])  # fewer than three: no evidence
    with pytest.raises(ValueError, match="one length"):
        ranks_agree([1, 2, 3], [1, 2])


def test_a_task_names_its_dissent_rule_and_one_without_it_keeps_the_distance_rule():
    plain = TaskSpec(task_id="t", coordinator="c", accountable_voters=True)
    assert "dissent_rule" not in plain.to_body() and TaskSpec.from_body(plain.to_body()).voter_dissent == "distance"
    aware = TaskSpec(task_id="t", coordinator="c", accountable_voters=True, dissent_rule="rank-aware")
    assert TaskSpec.from_body(aware.to_body()).voter_dissent == "rank-aware"
    assert TaskSpec(task_id="t", coordinator="c", dissent_rule="rank-aware").voter_dissent is None  # not accountable
    with pytest.raises(ConfigError, match="dissent_rule must be one of"):
        TaskSpec.from_body({**aware.to_body(), "dissent_rule": "closest"})


def test_colluders_that_downvote_honest_nodes_dissent():
    group = {"h6", "h7"}

    def collude(scores: dict[str, float]) -> dict[str, float]:
        return {t: 1.0 if t in group else s * 0.5 for t, s in scores.items()}

    votes = _votes(HONEST, {n: collude for n in group})
    assert dissenting_voters(votes, "accuracy") == ["h6", "h7"]
    quality, _ = round_quality(votes, "accuracy", "median", "rank-aware")
    assert quality["h7"] == pytest.approx(HONEST["h7"])  # the group's lift of its own no longer counts
    lifted, _ = round_quality(votes, "accuracy", "mean", None)
    assert lifted["h7"] > HONEST["h7"] + 0.005


def _one_round_chain(tmp_path, voter=reverse, task_kw: dict[str, object] | None = None, **block_kw: object):
    """A replica of a task with accountable voters (``task_kw`` more task fields) whose round 1 has one
    unusual voter, node-05, scoring by ``voter`` (default: reversing its scores); the block's result as
    ``block_kw`` says, written straight into LMDB (past validation), as an attacker with disk access would."""
    from ledger.backends.lmdb import LmdbStore
    from ledger.replica import Replica
    from tests.helpers import make_consortium, round_block

    c = make_consortium(5, accountable_voters=True, elimination="outlier", **(task_kw or {}))
    truth = {"node-01": 0.91, "node-02": 0.92, "node-03": 0.93, "node-04": 0.3, "node-05": 0.94}
    scores = _votes(truth, {"node-05": voter})
    path = tmp_path / "chain"
    Replica.open(path, c.genesis.raw).close()
    with LmdbStore(path) as store:
        height, head = store.head()
        block = round_block(c, height + 1, head, 1, scores, True, **block_kw)  # type: ignore[arg-type]
        store.append(block.height, block.hash, block.raw)
    return path


def _both_verifiers(path, complaint: str | None) -> None:
    from ledger.inspect import verify_replica
    from tests.test_third_party_verifier import third_party

    done = third_party(path)
    if complaint is None:
        assert done.returncode == 0, done.stdout + done.stderr
        assert verify_replica(path).height == 1
        return
    assert done.returncode == 2 and complaint in done.stdout, done.stdout
    with pytest.raises(Exception, match=complaint.split()[-1]) as ours:
        verify_replica(path)
    assert ours.value.height == 1


@pytest.mark.parametrize(
    ("block_kw", "complaint"),
    [
        ({"rewards": {"node-03": 50.0}, "eliminated": ("node-04", "outlier")}, None),
        ({"rewards": {"node-05": 50.0}, "eliminated": ("node-04", "outlier")}, "dissenting voter is paid"),
        ({"rewards": {"node-03": 50.0}, "dissenters": [], "eliminated": ("node-04", "outlier")}, "dissenters"),
        ({"rewards": {"node-03": 50.0}, "eliminated": ("node-01", "outlier")}, "not an outlier"),
        ({"rewards": {"node-03": 50.0}, "eliminated": ("node-02", "dissenting-voter")}, "did not dissent"),
    ],
)
def test_both_verifiers_recompute_dissenters_and_outliers_from_the_votes(tmp_path, block_kw, complaint):
    _both_verifiers(_one_round_chain(tmp_path, **block_kw), complaint)


@pytest.mark.parametrize(
    ("rule", "named", "complaint"),
    [
        (None, ["node-05"], None),  # a task from before the rule: the distance alone decides
        (None, [], "dissenters"),
        ("rank-aware", [], None),
        ("rank-aware", ["node-05"], "dissenters"),
    ],
)
def test_both_verifiers_apply_the_dissent_rule_the_task_names(tmp_path, rule, named, complaint):
    """node-05 scores every peer 25 points under the others, in their order: by the distance alone a
    dissenter, under "rank-aware" not. A block must name exactly what its task's rule finds."""
    task_kw = {} if rule is None else {"dissent_rule": rule}
    path = _one_round_chain(
        tmp_path,
        offset(0.25),
        task_kw,
        dissenters=named,
        rewards={"node-03": 50.0},
        eliminated=("node-04", "outlier"),
    )
    _both_verifiers(path, complaint)
