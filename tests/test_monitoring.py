"""The psutil sampler against psutil read directly in the same process, the metrics body checks,
and the run's SQLite time series (index, restart)."""

import math
import os
import sqlite3
import time

import psutil
import pytest

from bpcv.sampler import Sample, Sampler
from coordinator.timeseries import TimeSeries


def test_sampler_matches_psutil_read_directly():
    sampler = Sampler(lambda s: None)
    burn_until = time.process_time() + 0.3
    while time.process_time() < burn_until:  # use some CPU so the percentage is not trivially 0
        math.sqrt(12345.678)
    own = psutil.Process()
    rss_before, net_before = own.memory_info().rss, psutil.net_io_counters()
    sample = sampler.sample()
    rss_after, net_after = own.memory_info().rss, psutil.net_io_counters()
    assert 0 < sample.cpu_percent <= 100 * psutil.cpu_count()
    assert min(rss_before, rss_after) * 0.95 <= sample.rss_bytes <= max(rss_before, rss_after) * 1.05
    assert net_before.bytes_sent <= sample.net_sent <= net_after.bytes_sent
    assert net_before.bytes_recv <= sample.net_recv <= net_after.bytes_recv
    assert sample.temperature_c is None or 0 < sample.temperature_c < 150
    assert abs(sample.ts - time.time()) < 5
    assert sample.pid == os.getpid() and sample.ledger_cpu_s == 0.0  # no replica in this sampler


def test_sampler_thread_publishes_once_per_interval():
    got = []
    sampler = Sampler(got.append, interval=0.05)
    sampler.start()
    time.sleep(0.5)
    sampler.stop()
    assert 6 <= len(got) <= 11 and all(isinstance(s, Sample) for s in got)


def test_metrics_body_is_checked():
    good = Sample(1.0, 42, 2.5, 100, 10, 20, None, 0.25).to_body()
    assert Sample.from_body(good) == Sample(1.0, 42, 2.5, 100, 10, 20, None, 0.25)
    for bad in (
        {**good, "cpu_percent": float("nan")},
        {**good, "rss_bytes": -1},
        {**good, "extra": 1},
        {"ts": 1},
        {**good, "pid": 4.5},
        {**good, "ledger_cpu_s": -1.0},
    ):
        with pytest.raises(ValueError):
            Sample.from_body(bad)


def test_timeseries_keeps_rows_across_a_restart_and_is_indexed(tmp_path):
    store = TimeSeries(tmp_path / "metrics.sqlite")
    store.add_sample("node-01", Sample(1.0, 7, 5.0, 1000, 1, 2, 40.5, 0.1))
    store.add_event(1.5, 1, "decided", {"accuracy": 0.9})
    store.close()
    again = TimeSeries(tmp_path / "metrics.sqlite")
    again.add_sample("node-01", Sample(2.0, 7, 6.0, 1001, 3, 4, None, 0.2))
    assert [r["ts"] for r in again.samples("node-01")] == [1.0, 2.0] and len(again.events()) == 1
    assert again.latest_samples()["node-01"]["ledger_cpu_s"] == 0.2
    again.close()
    indexes = sqlite3.connect(tmp_path / "metrics.sqlite").execute("PRAGMA index_list(samples)").fetchall()
    assert any(i[1] == "samples_by_node_time" for i in indexes)


def test_replica_counts_the_cpu_it_spends_on_blocks():
    from tests.helpers import make_consortium, round_block
    from ledger.replica import Replica

    c = make_consortium(n_agents=8)
    replica = Replica.open(None, c.genesis.raw)
    assert replica.cpu_s == 0.0
    builder = Replica.open(None, c.genesis.raw)
    blocks = []
    for r in range(1, 6):
        scores = {v: {t: 0.9 for t in c.agents if t != v} for v in c.agents}
        block = round_block(c, builder.height + 1, builder.head_hash, r, scores, include_task=(r == 1))
        builder.append(block.raw)
        blocks.append(block.raw)
    started = time.thread_time()
    for raw in blocks:
        replica.append(raw)
    spent = time.thread_time() - started
    assert 0 < replica.cpu_s <= spent + 1e-3
