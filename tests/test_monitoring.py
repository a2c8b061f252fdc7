"""The psutil sampler against psutil read directly in the same process, the metrics body checks,
and the run's SQLite time series (index, restart)."""

import math
import os
import sqlite3
import threading
import time

import psutil
import pytest

from bpcv.errors import Rejected
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
    """Waits on the samples themselves, not on the clock: on a loaded machine they may come late,
    but never more often than once per interval, always from the sampler's own thread, and the
    thread ends on ``stop``."""
    interval, wanted = 0.05, 6
    got: list[tuple[float, Sample, threading.Thread]] = []
    enough = threading.Event()

    def publish(sample: Sample) -> None:
        got.append((time.monotonic(), sample, threading.current_thread()))
        if len(got) >= wanted:
            enough.set()

    sampler = Sampler(publish, interval=interval)
    started = time.monotonic()
    sampler.start()
    arrived = enough.wait(timeout=60)
    sampler.stop()
    assert arrived, f"{len(got)} samples in 60 s at one per {interval} s"
    threads = {thread for _, _, thread in got}
    assert len(threads) == 1 and threading.current_thread() not in threads
    (thread,) = threads
    thread.join(timeout=60)  # stop() waits two intervals at most; a loaded machine may need longer
    assert not thread.is_alive(), "the sampler thread did not end after stop()"
    times = [started] + [t for t, _, _ in got]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.9 * interval, f"samples closer than the {interval} s interval: {gaps}"
    assert all(isinstance(s, Sample) for _, s, _ in got)


def test_metrics_body_is_checked():
    good = Sample(1.0, 42, 2.5, 100, 10, 20, None, 0.25, 7).to_body()
    assert Sample.from_body(good) == Sample(1.0, 42, 2.5, 100, 10, 20, None, 0.25, 7)
    older = {k: v for k, v in good.items() if k != "chain_height"}  # a node from before heights were sent
    assert Sample.from_body(older) == Sample(1.0, 42, 2.5, 100, 10, 20, None, 0.25, 0)
    for bad in (
        {**good, "chain_height": 2.5},
        {**good, "chain_height": -1},
        {k: v for k, v in good.items() if k != "rss_bytes"},
        {**good, "cpu_percent": float("nan")},
        {**good, "rss_bytes": -1},
        {**good, "extra": 1},
        {"ts": 1},
        {**good, "pid": 4.5},
        {**good, "ledger_cpu_s": -1.0},
    ):
        with pytest.raises(Rejected, match="metrics"):
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


def test_timeseries_keeps_every_row_of_a_process_that_dies_without_closing_it(tmp_path):
    """Inserts commit one by one without a sync each (WAL, synchronous NORMAL: 1 ms less a sample on
    the coordinator's message thread): a process that is killed loses none of them."""
    import subprocess
    import sys

    path = tmp_path / "metrics.sqlite"
    writer = (
        "import os, sys\n"
        "from bpcv.sampler import Sample\n"
        "from coordinator.timeseries import TimeSeries\n"
        "store = TimeSeries(__import__('pathlib').Path(sys.argv[1]))\n"
        "for i in range(50):\n"
        "    store.add_sample('node-01', Sample(float(i), 7, 5.0, 1000, 1, 2, None, 0.1))\n"
        "store.add_event(99.0, 1, 'decided', {'accuracy': 0.9})\n"
        "os._exit(0)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", writer, str(path)], cwd=root, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    store = TimeSeries(path, readonly=True)
    assert len(store.samples("node-01")) == 50 and len(store.events()) == 1
    store.close()


def test_replica_counts_the_cpu_it_spends_on_blocks():
    from ledger.replica import Replica
    from tests.helpers import make_consortium, round_block

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


def test_monitor_view_follows_a_round_from_signed_messages_and_ignores_forgeries():
    from bpcv.envelope import seal
    from bpcv.identity import Identity
    from bpcv.intake import Intake
    from bpcv.messages import GlobalModel, Manifest, Result, seal_message
    from bpcv.topics import Topics
    from bpcv_app.monitor import FleetView, MonitorClient
    from ledger.replica import Replica
    from tests.helpers import make_consortium

    c = make_consortium(n_agents=3)
    registry = Replica.open(None, c.genesis.raw).state.registry
    topics = Topics()
    view = FleetView(topics)
    client = MonitorClient(view, Intake(registry, "monitor"))
    a1, a2 = c.agents["node-01"], c.agents["node-02"]
    metrics = Sample(time.time(), 42, 37.5, 300 << 20, 0, 0, 51.0, 0.12).to_body()
    client.handle(topics.status("node-01"), b"online", 0.0)
    client.handle(topics.metrics("node-01"), seal(a1, "metrics", "", 0, metrics).raw, 0.0)
    client.handle(topics.metrics("node-02"), seal(a1, "metrics", "", 0, metrics).raw, 0.0)  # on another's topic
    impostor = Identity.generate("node-03")  # right name, key not in the genesis
    client.handle(topics.metrics("node-03"), seal(impostor, "metrics", "", 0, metrics).raw, 0.0)
    roster = GlobalModel(["node-01", "node-02"], "00")
    client.handle(topics.global_model("t1", 1), seal_message(c.coordinator, roster, "t1", 1).raw, 10.0)
    assert "training" in view.progress_line(12.0)
    manifest = Manifest({"node-01": "aa", "node-02": "bb"})
    client.handle(topics.manifest("t1", 1), seal_message(c.coordinator, manifest, "t1", 1).raw, 13.0)
    client.handle(topics.vote("t1", 1, "node-02"), seal(a2, "vote", "t1", 1, {"scores": {}}).raw, 14.0)
    assert "validating: 1/2 votes" in view.progress_line(14.0)
    result = Result(
        ranking=["node-02", "node-01"],
        votes=[],
        records=[],
        global_digest="00",
        metric="accuracy",
        value=0.93,
        eliminated="node-01",
        proposer="node-02",
    )
    client.handle(topics.vote("t1", 0, "node-01"), b"", 14.5)  # node-01 clearing its retained vote: ignored
    client.handle(topics.result("t1", 1), seal_message(a2, result, "t1", 1).raw, 15.0)  # not the coordinator
    client.handle(topics.result("t1", 1), seal(c.coordinator, "result", "t1", 1, {"metric": "accuracy"}).raw, 15.0)
    assert view.history == [] and client.intake.rejected["malformed"] == 1  # a result without its fields
    client.handle(topics.result("t1", 1), seal_message(c.coordinator, result, "t1", 1).raw, 15.0)
    assert view.history == ["round 1: accuracy 0.9300, eliminated node-01, proposer node-02"]
    rows = {r["node"]: r for r in view.rows(now=3.0)}
    assert set(rows) == {"node-01", "node-02"}  # the forged samples made no row
    assert rows["node-01"]["cpu"] == "38%" and rows["node-01"]["temp"] == "51°C" and rows["node-01"]["round"]
    assert rows["node-02"]["last_vote"].startswith("round 1") and rows["node-02"]["cpu"] == "-"
    assert view.rows(now=60.0)[0]["status"] == "online (silent)"  # no sample for a minute


def test_prometheus_endpoint_serves_each_nodes_latest_sample():
    import urllib.request

    from bpcv.errors import ConfigError
    from bpcv.exporter import exporter_for, parse_listen
    from broker.runner import free_port

    assert exporter_for(["", ""]) is None  # off by default
    with pytest.raises(ConfigError, match="one Prometheus endpoint"):
        exporter_for(["127.0.0.1:9101", "127.0.0.1:9102"])
    for bad in ("9101", "host:", "host:70000", "host:http"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            parse_listen(bad)
    port = free_port()
    exporter = exporter_for([f"127.0.0.1:{port}", f"127.0.0.1:{port}"])
    try:
        exporter.observe("node-01", Sample(1.0, 42, 12.5, 300 << 20, 7, 9, None, 0.25))
        exporter.observe("node-02", Sample(1.0, 42, 12.5, 300 << 20, 7, 9, 48.0, 0.5, 3))
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        exporter.close()
    assert 'bpcv_process_cpu_percent{node="node-01"} 12.5' in text
    assert 'bpcv_ledger_cpu_seconds{node="node-02"} 0.5' in text
    assert 'bpcv_chain_height{node="node-02"} 3.0' in text
    assert 'bpcv_board_temperature_celsius{node="node-02"} 48.0' in text
    assert 'bpcv_board_temperature_celsius{node="node-01"}' not in text  # no sensor, no made-up reading


def test_demo_waits_only_for_reporting_replicas_that_are_behind():
    """The replica heights the demo waits on, from signed metrics samples read as the monitor reads them:
    a node below the chain's height is waited for, one that never reported or went silent (its process
    died) is not, and a sample signed by another key than the topic's node is refused and moves nothing."""
    from bpcv.intake import Intake
    from bpcv.topics import Topics
    from bpcv_app.monitor import STALE_S, FleetView, MonitorClient
    from ledger.replica import Replica
    from tests.helpers import make_consortium

    c = make_consortium(n_agents=3)
    fleet = MonitorClient(FleetView(Topics()), Intake(Replica.open(None, c.genesis.raw).state.registry, "demo"))
    now = time.monotonic()

    def send(node: str, height: int, signer: str | None = None) -> None:
        raw = Sample(time.time(), 7, 1.0, 100, 0, 0, None, 0.0, height).sealed(c.agents[signer or node])
        fleet.handle(f"bpcv/v1/nodes/{node}/metrics", raw, now)

    send("node-01", 2)
    send("node-02", 3)
    everyone = {"node-01", "node-02", "node-03"}
    assert fleet.view.behind(everyone, 3, now) == ["node-01"]  # node-03 never reported: not waited for
    send("node-01", 3, signer="node-02")  # forged: node-02's key on node-01's topic
    assert fleet.view.behind(everyone, 3, now) == ["node-01"]
    send("node-01", 3)
    assert fleet.view.behind(everyone, 3, now) == []
    assert fleet.view.behind(everyone, 4, now) == ["node-01", "node-02"]
    assert fleet.view.behind(everyone, 4, now + STALE_S + 1) == []  # every sample too old: the nodes are gone
