"""`bpcv report`: the table logic on hand-made data, and every figure written for a small run folder.
(The integration test `test_malicious_agent_eliminated_…` runs it on a live run's folder.)"""

import dataclasses
import json

import numpy as np
import pytest

from bpcv.errors import ConfigError
from bpcv.sampler import Sample
from bpcv_app.report import write_report
from bpcv_app.rundata import (
    RunData,
    bytes_per_round,
    ledger_cpu_percent,
    monotonic,
    processes,
    quality_matrix,
)
from coordinator.summary import NodeSummary, RoundRow, TaskSummary
from coordinator.timeseries import TimeSeries

NODES = ("node-01", "node-02", "node-03")


def round_row(round_no: int, value: float, **fields) -> RoundRow:
    """A decided round as the coordinator records it; unnamed fields empty."""
    empty = {"eliminated_reason": None, "dropped": [], "left": [], "aggregated": [], "excluded": []}
    empty |= {"proposer": None, "rewards": {}, "admitted": [], "invalid": {}, "eliminated": None}
    return RoundRow(round=round_no, metric="accuracy", value=value, **(empty | fields))


ROUNDS = [
    round_row(
        1,
        0.91,
        ranking=["node-02", "node-03", "node-01"],
        quality={"node-01": 0.1, "node-02": 0.9, "node-03": 0.85},
        invalid={"node-04": "non-finite"},
        eliminated="node-01",
        admitted=["node-05"],
        on_chain=True,
        block_proposer="node-02",
        block_rank=0,
        chain_height=1,
    ),
    round_row(
        2,
        0.94,
        ranking=["node-05", "node-02", "node-03"],
        quality={"node-02": 0.92, "node-03": 0.9, "node-05": 0.93},
        eliminated="node-03",
        on_chain=True,
        block_proposer="node-05",
        block_rank=0,
        chain_height=2,
    ),
]


def sample(node, ts, pid, cpu=10.0, ledger=0.0):
    return {
        "node": node,
        "ts": ts,
        "pid": pid,
        "cpu_percent": cpu,
        "rss_bytes": 100 << 20,
        "net_sent": 0,
        "net_recv": 0,
        "temperature_c": None,
        "ledger_cpu_s": ledger,
    }


def test_pooled_agents_are_one_process_and_ledger_cpu_is_a_rate():
    samples = [sample("node-01", 10.0, 7), sample("node-02", 10.0, 7), sample("node-03", 10.2, 7)]
    samples += [sample("coordinator", 10.1, 9)]
    groups = processes(samples)
    assert sorted(map(sorted, groups.values())) == [["coordinator"], ["node-01", "node-02"], ["node-03"]]
    t, pct = ledger_cpu_percent([sample("n", 0.0, 1, ledger=0.0), sample("n", 2.0, 1, ledger=0.1)])
    assert t.tolist() == [2.0] and pct.tolist() == pytest.approx([5.0])  # 0.1 CPU-s over 2 s = 5 %


def test_traffic_counters_survive_a_broker_restart_and_split_by_round():
    ts, values = monotonic([(0.0, 100), (1.0, 300), (2.0, 50), (3.0, 150)])  # restart between 1 s and 2 s
    assert values.tolist() == [100, 300, 350, 450]
    data = RunData(
        TaskSummary(task={"task_id": "t1"}, metric="accuracy", rounds=ROUNDS),
        [],
        [(1.0, 1, "decided", {}), (3.0, 2, "decided", {})],
        {"received": [(0.0, 0), (2.0, 2000), (4.0, 2000)], "sent": [(0.0, 0), (4.0, 8000)]},
    )
    assert bytes_per_round(data) == [
        {"round": 1, "received": 1000, "sent": 2000},
        {"round": 2, "received": 1000, "sent": 4000},
    ]


def test_quality_matrix_marks_rank_elimination_and_invalid():
    nodes, matrix, marks = quality_matrix(ROUNDS)
    assert nodes == ["node-01", "node-02", "node-03", "node-04", "node-05"]
    assert marks[(0, 0)] == "out" and marks[(1, 0)] == "#1" and marks[(3, 0)] == "bad" and marks[(2, 1)] == "out"
    assert matrix[1, 1] == pytest.approx(0.92) and np.isnan(matrix[4, 0]) and np.isnan(matrix[0, 1])


def run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    nodes = {n: NodeSummary(status="active", reward=1.0, num_samples=10, left_because=None, privacy={}) for n in NODES}
    nodes["node-02"].privacy = {"mechanism": "laplace", "epsilon_budget": 10.0, "epsilon_spent": 2.5}
    summary = TaskSummary(
        task={"task_id": "t1", "category": "classification", "dataset": "mnist", "model": "mlp:16", "target": None},
        metric="accuracy",
        rounds=ROUNDS,
        nodes=nodes,
        stopped_because="round limit",
        final_model_digest="ab" * 32,
    )
    (run / "coordinator.json").write_text(json.dumps(summary.to_json()))
    store = TimeSeries(run / "metrics.sqlite")
    for second in range(20):
        for node, pid in (("node-01", 7), ("node-02", 7), ("node-03", 8), ("coordinator", 9)):
            store.add_sample(node, Sample(1000.0 + second, pid, 20.0, 300 << 20, 0, 0, None, 0.01 * second))
        for counter, per_s in (("received", 1000), ("sent", 5000)):
            store.add_broker_bytes(1000.0 + second, counter, per_s * second)
    for r, at in ((1, 1008.0), (2, 1016.0)):
        store.add_event(at, r, "decided", {"accuracy": 0.9})
        store.add_event(at + 0.1, r, "block", {"height": r})
    store.close()
    return run


def test_report_writes_every_figure_and_a_summary(tmp_path):
    paths = write_report(run_folder(tmp_path))
    names = sorted(p.name for p in paths)
    assert names == [
        "accuracy.png",
        "chain_height.png",
        "cpu_memory.png",
        "quality_ranking.png",
        "report.md",
        "traffic.png",
    ]
    for path in paths:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    text = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "node-01 (round 1), node-03 (round 2)" in text
    assert "4 nodes in 3 processes" in text
    assert "| 2 | 0.9400 | node-03 |" in text
    assert "| 2.500 of 10.0 (laplace) |" in text and text.count("| - |\n") >= 3  # ε only where DP ran


def test_report_on_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no coordinator.json"):
        write_report(tmp_path)
    (tmp_path / "coordinator.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        write_report(tmp_path)
    (tmp_path / "coordinator.json").write_text('{"task": {"task_id": "t1"}}')
    with pytest.raises(ConfigError, match="not a coordinator summary"):
        write_report(tmp_path)


def test_report_of_a_regression_task_uses_mae(tmp_path):
    """The report took the metric from a task field that coordinator.json never had, so a regression
    run's report looked for 'accuracy' in its rows."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [dataclasses.replace(r, metric="mae", value=r.value * 10) for r in ROUNDS]
    summary = TaskSummary(task={"task_id": "t2", "category": "regression"}, metric="mae", rounds=rows)
    (run / "coordinator.json").write_text(json.dumps(summary.to_json()))
    write_report(run)
    text = (run / "report" / "report.md").read_text()
    assert "final mae on the test set: 9.4000" in text and "| 2 | 9.4000 |" in text
