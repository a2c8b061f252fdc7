"""The coordinator's checkpoint and summary: what a restarted coordinator reads back is what it saved,
and coordinator.json keeps its shape (the metric's own name as the key of its value)."""

import json

import lmdb
import pytest

from bpcv.errors import ConfigError
from coordinator.checkpoint import Checkpoint, NodeStatus, RunState
from coordinator.rounds import RoundOutcome
from coordinator.summary import RoundRow, TaskSummary

OUTCOME = RoundOutcome(
    quality={"a": 0.91234567, "b": 0.5},
    ranking=["a", "b"],
    proposer="a",
    aggregated=["a"],
    excluded=["b"],
    eliminated="b",
    eliminated_reason="lowest-quality",
    invalid={},
    dropped=[],
    admitted=["s"],
    next_roster=["a", "s"],
    rewards={"a": 100.0},
)


def test_a_checkpoint_reads_back_as_saved(tmp_path):
    row = RoundRow.decided(1, "mae", 1.23456789, OUTCOME, left=[])
    state = RunState(
        task_id="t1",
        joins={"a": [0, 10], "b": [1, 20], "s": [2, 5]},
        roster=["a", "s"],
        standby=[],
        status={"a": NodeStatus.ACTIVE, "b": NodeStatus.ELIMINATED, "s": NodeStatus.ACTIVE},
        rewards={"a": 100.0, "b": 0.0, "s": 0.0},
        rows=[row],
        pending_row=RoundRow.decided(2, "mae", 1.0, OUTCOME, left=[]),
        round=2,
        phase="decided",
        outlier_streaks={"s": 2},
    )
    checkpoint = Checkpoint(tmp_path / "cp")
    checkpoint.save(state, b"weights")
    checkpoint.close()
    again = Checkpoint(tmp_path / "cp")
    loaded, weights = again.load()
    assert loaded == state and weights == b"weights"
    assert loaded.status["b"] is NodeStatus.ELIMINATED and loaded.rows[0].value == 1.234568
    again.close()


def test_a_state_saved_before_outlier_streaks_resumes_with_its_outliers_one_round_running():
    old = json.loads(RunState(task_id="t1", joins={}, roster=["a"], standby=[], status={}, rewards={}).to_json())
    del old["outlier_streaks"]
    loaded = RunState.from_json(json.dumps(old | {"outliers": ["a"]}).encode())
    assert loaded.outlier_streaks == {"a": 1}


def test_an_unreadable_checkpoint_is_a_clear_error(tmp_path):
    checkpoint = Checkpoint(tmp_path / "cp")
    state = RunState(task_id="t1", joins={}, roster=[], standby=[], status={}, rewards={})
    checkpoint.save(state, b"w")
    checkpoint.close()
    with lmdb.open(str(tmp_path / "cp")) as env, env.begin(write=True) as txn:  # a state of another version
        txn.put(b"state", json.dumps({"task_id": "t1"}).encode())
    checkpoint = Checkpoint(tmp_path / "cp")
    with pytest.raises(ConfigError, match="coordinator checkpoint unreadable"):
        checkpoint.load()
    checkpoint.close()


def test_coordinator_json_keeps_the_metric_name_as_the_key():
    row = RoundRow.decided(1, "accuracy", 0.9, OUTCOME, left=[])
    row.on_chain, row.chain_height = True, 1
    summary = TaskSummary(task={"task_id": "t1"}, metric="accuracy", rounds=[row], stopped_because="round limit")
    out = summary.to_json()
    assert out["final_accuracy"] == 0.9 and out["rounds"][0]["accuracy"] == 0.9 and "metric" not in out["rounds"][0]
    assert RoundRow.from_json(out["rounds"][0]) == row
    assert list(out)[:4] == ["task", "rounds", "stopped_because", "final_accuracy"]
    failed = TaskSummary(task={"task_id": "t1"}, metric="accuracy", error="only 1 nodes joined, 2 needed").to_json()
    assert failed["error"].startswith("only 1") and "final_accuracy" not in failed


def test_a_restarted_coordinator_resumes_its_task_without_the_brokers_retained_announcement(consortium):
    """A broker killed before it saved its store loses the retained task: the coordinator's checkpoint keeps
    the announcement it started, so a restart resumes from it, or starts it again when no roster was
    saved. Nothing to take up: a finished task, or no announcement (a coordinator that never started one)."""
    from bpcv.topics import Topics
    from tests.helpers import offline_coordinator

    c, tmp = consortium

    def restarted():
        return offline_coordinator(c, tmp, list(c.agents), [(3, 2), (2,)])

    coord = restarted()
    assert coord.resume_from_checkpoint() is None  # nothing started
    assert coord.runner_for(Topics().task("t1"), c.task_env.raw) is not None  # starting it keeps it
    assert coord.checkpoint.load_announcement() == c.task_env.raw
    coord.close()
    coord = restarted()  # killed before it saved a roster: it starts the task again (agents join again)
    assert coord.resume_from_checkpoint() is not None
    state = RunState("t1", {}, list(c.agents), [], {}, {})
    coord.checkpoint.save(state, b"weights")
    coord.close()
    coord = restarted()
    assert coord.resume_from_checkpoint() is not None
    state.stopped_because = "round limit"
    coord.checkpoint.save(state, b"weights")
    coord.close()
    coord = restarted()
    assert coord.resume_from_checkpoint() is None
    coord.close()
