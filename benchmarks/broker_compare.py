"""Benchmark: the brokers under the same live load (issue #17: keep the hand-written embedded broker, or
use amqtt, the maintained asyncio broker, if it holds the N = 50 load within 1.2x of ours).

    .venv/bin/python benchmarks/broker_compare.py [--brokers embedded,mosquitto] [--nodes 50] [--committee 5] [--repeats 2]

For each broker (``embedded``: ``bpcv broker run --embedded``, since the switch amqtt in-process,
``broker/embedded.py``; ``mosquitto``, the C broker the project deploys), in turn and ``--repeats``
times round-robin, the broker runs as its own process on a free loopback port and one
``benchmarks/scale.py`` cell runs against it (``bpcv demo --broker``: N agents in pools, committees of
k, float32 updates, mlp:128, Laplace, 1 local epoch). Per run: the median seconds between round
decisions (round 2 on) and the broker process's CPU seconds per round (psutil, over the whole cell)
and peak RSS. Writes benchmarks/results/broker_compare.csv. The decision's numbers are in
broker_compare_before_switch.csv: rows ``handwritten`` are the broker this project wrote, then deleted
for amqtt (``git show fface9a:broker/embedded.py``), beside amqtt 0.12.1 run from its own ``amqtt``
command with a config of its own (rows ``amqtt``) and mosquitto.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from csv_rows import write_rows
from scale import run_cell

from broker.runner import free_port, start_broker_process, wait_for_port

COLUMNS = ["broker", "nodes", "committee", "rounds", "round_s", "broker_cpu_s_per_round", "broker_peak_rss_mb", "run"]
HANDWRITTEN = "fface9a:broker/embedded.py"  # the broker this project wrote, before amqtt replaced it


def start(kind: str, port: int, work: Path) -> subprocess.Popen:
    """The broker ``kind`` listening on 127.0.0.1:``port``, as its own process; ``handwritten`` is the
    deleted broker, read from git history."""
    if kind != "handwritten":
        return start_broker_process(kind, "127.0.0.1", port, work)
    work.mkdir(parents=True, exist_ok=True)
    source = subprocess.run(["git", "show", HANDWRITTEN], cwd=ROOT, capture_output=True, check=True).stdout
    (work / "handwritten_broker.py").write_bytes(source)
    code = f"from handwritten_broker import run_embedded; run_embedded('127.0.0.1', {port})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port("127.0.0.1", port, alive=proc)
    return proc


class Watch:
    """The broker process's CPU seconds since it was created, and its peak RSS sampled every 0.5 s until stopped."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.cpu0 = sum(self.proc.cpu_times()[:2])
        self.peak = self.proc.memory_info().rss
        self.stopped = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self.stopped.wait(0.5):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def cpu_s(self) -> float:
        return sum(self.proc.cpu_times()[:2]) - self.cpu0


def run(kind: str, args: argparse.Namespace, work: Path, repeat: int) -> dict[str, object]:
    port = free_port()
    broker = start(kind, port, work / f"{kind}-{repeat}")
    watch = Watch(broker.pid)
    try:
        row = run_cell(args.nodes, args.committee, "float32", args.rounds, 1, work, "bpcv", f"mqtt://127.0.0.1:{port}")
        cpu = watch.cpu_s()
    finally:
        watch.stopped.set()
        broker.terminate()
        broker.wait(timeout=20)
    return {
        "broker": kind,
        "nodes": args.nodes,
        "committee": args.committee,
        "rounds": row["rounds_done"],
        "round_s": row["round_s"],
        "broker_cpu_s_per_round": round(cpu / max(1, int(row["rounds_done"])), 2),
        "broker_peak_rss_mb": round(watch.peak / 2**20, 1),
        "run": repeat,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="embedded,mosquitto", help="comma-separated; also: handwritten")
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--committee", type=int, default=5)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "broker_compare.csv")
    args = p.parse_args()
    kinds = args.brokers.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(1, args.repeats + 1):
            for kind in kinds:
                row = run(kind, args, Path(tmp), repeat)
                print(row, flush=True)
                rows.append(row)
                write_rows(args.out, COLUMNS, rows)  # after every run: a long comparison keeps its progress
    for kind in kinds:
        own = [float(r["round_s"]) for r in rows if r["broker"] == kind and r["round_s"] != ""]
        if own:
            print(f"{kind}: median round {statistics.median(own):.2f} s over {len(own)} runs")


if __name__ == "__main__":
    main()
