"""Ledger CPU over time with 30 and 50 nodes (the paper's Figures 8-9): 5 tx/s, one block every 2 s.

    .venv/bin/python experiments/ledger_cpu/run.py [--nodes 30 --nodes 50] [--idle 20] [--seconds 120]

For each consortium size N: a real mosquitto broker, and N ledger nodes, each its own OS process
(`bpcv chain follow`: an LMDB replica that verifies every block's signatures, transactions and PoQ
ranking before storing it). A publisher sends one block every 2 s holding 10 signed transactions of
an N-node round (8 votes scoring the N-1 peers, the result, the reward split: 5 tx/s). Every node
process is sampled with psutil once a second, from its CPU time (user + system), first ``--idle``
seconds connected with no blocks, then ``--seconds`` under load. The paper's CPU figure is a
client's CPU "when running the blockchain system"; here that is the whole replica process: MQTT
client, verification and LMDB writes, and nothing else.

Writes results.csv (nodes, node, phase, t_s, cpu_percent, rss_mb) and summary.json into the output
folder; plot.py draws cpu_over_time.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.replica_cpu import BLOCK_INTERVAL_S, TX_PER_BLOCK, build_blocks  # noqa: E402
from bpcv.mqtt import BrokerAddress, Bus  # noqa: E402
from bpcv.topics import Topics  # noqa: E402
from broker.runner import free_port, start_broker_process  # noqa: E402
from ledger.inspect import verify_replica  # noqa: E402

FIELDS = ["nodes", "node", "phase", "t_s", "cpu_percent", "rss_mb"]


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def start_followers(n: int, work: Path, url: str, seconds: float) -> list[subprocess.Popen]:
    """N `bpcv chain follow` processes; returns once every one is connected and following."""
    procs = []
    for i in range(n):
        log = open(work / f"node-{i:02d}.log", "wb")  # noqa: SIM115 - the child keeps the handle
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bpcv_app.cli", "chain", "follow", str(work / f"replica-{i:02d}"),
                 "--genesis", str(work / "genesis.bin"), "--broker", url, "--client-id", f"ledger-{i:02d}",
                 "--seconds", str(seconds)],
                stdout=subprocess.PIPE, stderr=log, text=True,
            )
        )  # fmt: skip
    deadline = time.monotonic() + 300
    for i, proc in enumerate(procs):
        while "following chain" not in (work / f"node-{i:02d}.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"node {i} did not start:\n" + (work / f"node-{i:02d}.log").read_text())
            time.sleep(0.2)
    return procs


def run_size(n: int, args: argparse.Namespace, writer: csv.DictWriter) -> dict[str, object]:
    n_blocks = int(args.seconds / BLOCK_INTERVAL_S)
    genesis, blocks = build_blocks(n, n_blocks)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "genesis.bin").write_bytes(genesis)
        port = free_port()
        broker = start_broker_process("mosquitto", "127.0.0.1", port, work / "broker")
        url = f"mqtt://127.0.0.1:{port}"
        started = time.monotonic()
        procs = start_followers(n, work, url, args.idle + args.seconds + 60 + 2 * n)
        print(f"{n} ledger nodes up in {time.monotonic() - started:.1f}s", flush=True)
        try:
            handles = [psutil.Process(p.pid) for p in procs]
            publisher = Bus(f"publisher-{n}", BrokerAddress.parse(url), lambda _t, _p: None)
            publisher.connect()
            topic = Topics().block("main")
            previous = [cpu_seconds(h) for h in handles]
            t0 = last = time.monotonic()
            total = int(args.idle + args.seconds)
            for second in range(1, total + 1):
                phase = "idle" if second <= args.idle else "load"
                if phase == "load":
                    k = second - int(args.idle) - 1
                    if k % int(BLOCK_INTERVAL_S) == 0 and k // int(BLOCK_INTERVAL_S) < len(blocks):
                        publisher.publish(topic, blocks[k // int(BLOCK_INTERVAL_S)], wait=None)
                time.sleep(max(0.0, t0 + second - time.monotonic()))
                now = time.monotonic()
                for i, h in enumerate(handles):
                    used = cpu_seconds(h)
                    writer.writerow(
                        {
                            "nodes": n,
                            "node": f"ledger-{i:02d}",
                            "phase": phase,
                            "t_s": second,
                            "cpu_percent": round(100 * (used - previous[i]) / (now - last), 3),
                            "rss_mb": round(h.memory_info().rss / 2**20, 1),
                        }
                    )
                    previous[i] = used
                last = now
            publisher.close()
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
        finally:
            for proc in procs:
                proc.kill()
            broker.terminate()
            broker.wait(timeout=10)
        heights = {verify_replica(work / f"replica-{i:02d}").height for i in range(n)}
    return {"nodes": n, "blocks_published": len(blocks), "replica_heights": sorted(heights)}


def summarise(csv_path: Path) -> dict[str, dict[str, float]]:
    rows: dict[tuple[str, str], list[float]] = {}
    per_node: dict[tuple[str, str, str], list[float]] = {}
    with csv_path.open() as f:
        for r in csv.DictReader(f):
            rows.setdefault((r["nodes"], r["phase"]), []).append(float(r["cpu_percent"]))
            per_node.setdefault((r["nodes"], r["phase"], r["node"]), []).append(float(r["cpu_percent"]))
    out = {}
    for (n, phase), values in sorted(rows.items()):
        means = [statistics.fmean(v) for (n2, p2, _), v in per_node.items() if (n2, p2) == (n, phase)]
        out[f"{n} nodes, {phase}"] = {
            "mean_cpu_percent_per_node": round(statistics.fmean(values), 3),
            "max_node_mean": round(max(means), 3),
            "p99_sample": round(sorted(values)[int(0.99 * (len(values) - 1))], 2),
            "max_sample": round(max(values), 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, action="append", default=[])
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--out", default=str(Path(__file__).parent))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    runs = []
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for n in args.nodes or [30, 50]:
            runs.append(run_size(n, args, writer))
            f.flush()
    summary = {
        "what": f"N `bpcv chain follow` processes (one per ledger node), one block every {BLOCK_INTERVAL_S:.0f} s "
        f"of {TX_PER_BLOCK} signed tx ({TX_PER_BLOCK / BLOCK_INTERVAL_S:.0f} tx/s), mosquitto; CPU from each "
        "process's CPU time once a second, percent of one core",
        "machine": f"{psutil.cpu_count()} cores, Python {sys.version.split()[0]}",
        "idle_s": args.idle,
        "load_s": args.seconds,
        "runs": runs,
        "cpu": summarise(csv_path),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
