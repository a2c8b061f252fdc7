"""Benchmark: the CPU cost of leaving the psutil sampler on (issue #6: target ≤ 1 % of one core).

    .venv/bin/python benchmarks/sampler_overhead.py [--seconds 60]

Two child processes side by side for the same ``--seconds``, each a connected MQTT client (the
project's Bus) on one broker (mosquitto when installed, else the embedded one): one with the sampler
on, signing and publishing a sample every second as a node does, one with it off. The cost is the
difference of their CPU time (user + system, from psutil) divided by the wall time. Writes
benchmarks/results/sampler_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.runner import free_port, mosquitto_binary, start_broker_process  # noqa: E402

CHILD = """
import sys, time
from bpcv.identity import Identity
from bpcv.mqtt import BrokerAddress, Bus
from bpcv.sampler import Sampler
from bpcv.topics import Topics
me = Identity.generate("node-01")
bus = Bus("node-01-" + sys.argv[2], BrokerAddress.parse(sys.argv[1]), lambda t, p: None)
bus.connect()
topic = Topics().metrics("node-01")
if sys.argv[2] == "on":
    Sampler(lambda s: bus.publish(topic, s.sealed(me), qos=0)).start()
print("ready", flush=True)
time.sleep(float(sys.argv[3]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default="benchmarks/results/sampler_overhead.json")
    args = parser.parse_args()
    kind = "mosquitto" if mosquitto_binary() else "embedded"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        broker = start_broker_process(kind, "127.0.0.1", port, Path(tmp))
        url = f"mqtt://127.0.0.1:{port}"
        try:
            children = {
                mode: subprocess.Popen(
                    [sys.executable, "-c", CHILD, url, mode, str(args.seconds + 5)], stdout=subprocess.PIPE, text=True
                )
                for mode in ("on", "off")
            }
            for child in children.values():
                assert child.stdout is not None and child.stdout.readline().startswith("ready")
            procs = {mode: psutil.Process(c.pid) for mode, c in children.items()}
            before = {mode: sum(p.cpu_times()[:2]) for mode, p in procs.items()}
            start = time.monotonic()
            time.sleep(args.seconds)
            wall = time.monotonic() - start
            used = {mode: sum(p.cpu_times()[:2]) - before[mode] for mode, p in procs.items()}
            for child in children.values():
                child.wait(timeout=60)
        finally:
            broker.terminate()
            broker.wait(timeout=10)
    result = {
        "what": f"CPU of a connected node process with the sampler on vs off, side by side, {args.seconds:.0f} s, "
        f"{kind} broker; one signed sample per second published at QoS 0",
        "cpu_seconds": {mode: round(v, 3) for mode, v in used.items()},
        "cpu_percent_of_one_core": {mode: round(100 * v / wall, 3) for mode, v in used.items()},
        "sampler_overhead_percent_of_one_core": round(100 * (used["on"] - used["off"]) / wall, 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
