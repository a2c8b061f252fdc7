"""Benchmark: CPU of one ledger replica at the paper's load (50 nodes, 5 tx/s, one block per 2 s).

    .venv/bin/python benchmarks/replica_cpu.py [--nodes 50] [--seconds 60] [--idle 20] [--broker mosquitto]

A real broker (mosquitto when installed, else the embedded one) and a real replica process,
`bpcv chain follow`, which verifies and appends every block it receives over MQTT into LMDB. This
script publishes one block every 2 s, each holding 10 signed transactions (8 votes, each scoring the
49 other nodes, the round result and the reward split: 5 tx/s), and samples the replica process with
psutil once a second: first ``--idle`` seconds connected with no blocks, then ``--seconds`` under
load, side by side in one run. CPU is in percent of one core. Writes benchmarks/results/replica_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bpcv.mqtt import BrokerAddress, Bus  # noqa: E402
from bpcv.topics import Topics  # noqa: E402
from broker.runner import free_port, mosquitto_binary, start_broker_process  # noqa: E402
from ledger.inspect import verify_replica  # noqa: E402
from ledger.replica import Replica  # noqa: E402
from tests.helpers import make_consortium, round_block  # noqa: E402

TX_PER_BLOCK = 10
BLOCK_INTERVAL_S = 2.0


def build_blocks(nodes: int, count: int) -> tuple[bytes, list[bytes]]:
    c = make_consortium(n_agents=nodes)
    agents = list(c.agents)
    builder = Replica.open(None, c.genesis.raw)
    blocks = []
    for r in range(1, count + 1):
        voters = [agents[(r * 8 + i) % nodes] for i in range(TX_PER_BLOCK - 2 - (r == 1))]
        scores = {
            v: {t: round(0.9 - 0.001 * ((i + r) % 50), 6) for i, t in enumerate(agents) if t != v} for v in voters
        }
        block = round_block(c, builder.height + 1, builder.head_hash, r, scores, include_task=(r == 1))
        assert len(block.txs) == TX_PER_BLOCK
        builder.append(block.raw)
        blocks.append(block.raw)
    return c.genesis.raw, blocks


def summarise(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "samples": len(samples),
        "median": round(statistics.median(samples), 2),
        "mean": round(statistics.fmean(samples), 2),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "max": round(max(samples), 2),
    }


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def sample(proc: psutil.Process, seconds: float, tick: Callable[[int], None] | None = None) -> dict[str, object]:
    """CPU % of ``proc`` once a second for ``seconds`` (``tick(t)`` runs each second: publishing), and the
    window's exact average from CPU time used / wall time (the per-second samples have 1% resolution)."""
    samples = []
    proc.cpu_percent(None)
    start, cpu_start = time.monotonic(), cpu_seconds(proc)
    for i in range(1, int(seconds) + 1):
        if tick is not None:
            tick(i - 1)
        time.sleep(max(0.0, start + i - time.monotonic()))
        samples.append(proc.cpu_percent(None))
    average = 100 * (cpu_seconds(proc) - cpu_start) / (time.monotonic() - start)
    return {"window_average": round(average, 3), **summarise(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--broker", choices=["mosquitto", "embedded"], default=None)
    parser.add_argument("--out", default="benchmarks/results/replica_cpu.json")
    args = parser.parse_args()

    n_blocks = int(args.seconds / BLOCK_INTERVAL_S)
    genesis, blocks = build_blocks(args.nodes, n_blocks)
    kind = args.broker or ("mosquitto" if mosquitto_binary() else "embedded")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "genesis.bin").write_bytes(genesis)
        port = free_port()
        broker = start_broker_process(kind, "127.0.0.1", port, work / "broker")
        url = f"mqtt://127.0.0.1:{port}"
        follower = subprocess.Popen(
            [sys.executable, "-m", "bpcv_app.cli", "chain", "follow", str(work / "replica"), "--genesis",
             str(work / "genesis.bin"), "--broker", url, "--seconds", str(args.idle + args.seconds + 15)],
            stdout=subprocess.PIPE, stderr=open(work / "follower.log", "wb"), text=True,
        )  # fmt: skip
        try:
            while "following chain" not in (work / "follower.log").read_text():
                time.sleep(0.2)
                if follower.poll() is not None:
                    raise SystemExit((work / "follower.log").read_text())
            proc = psutil.Process(follower.pid)
            publisher = Bus("bench-publisher", BrokerAddress.parse(url), lambda _t, _p: None)
            publisher.connect()
            topic = Topics().block("main")
            idle = sample(proc, args.idle)

            def publish(second: int) -> None:
                if second % int(BLOCK_INTERVAL_S) == 0 and second // int(BLOCK_INTERVAL_S) < len(blocks):
                    publisher.publish(topic, blocks[second // int(BLOCK_INTERVAL_S)])

            loaded = sample(proc, args.seconds, publish)
            rss_mb = proc.memory_info().rss / 2**20
            publisher.close()
            out, _ = follower.communicate(timeout=60)
        finally:
            follower.kill()
            broker.terminate()
            broker.wait(timeout=10)
        report = verify_replica(work / "replica")
    result = {
        "what": f"`bpcv chain follow` replica process, {args.nodes}-node consortium, one block every "
        f"{BLOCK_INTERVAL_S:.0f} s of {TX_PER_BLOCK} signed tx ({TX_PER_BLOCK / BLOCK_INTERVAL_S:.0f} tx/s), "
        f"{kind} broker; psutil cpu_percent once a second, percent of one core",
        "machine": f"{psutil.cpu_count()} cores, Python {sys.version.split()[0]}",
        "idle_cpu_percent": idle,
        "load_cpu_percent": loaded,
        "blocks_published": len(blocks),
        "replica_height_after": report.height,
        "mean_block_bytes": round(sum(map(len, blocks)) / len(blocks)),
        "replica_rss_mb": round(rss_mb, 1),
        "follower_said": out.strip(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
