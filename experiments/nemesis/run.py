"""The nemesis: live tasks over mosquitto, one after another, while faults are injected at random (seeded,
each logged), and after each task the invariants are checked on every replica (docs/RELIABILITY.md).

    .venv/bin/python experiments/nemesis/run.py --minutes 30 --seed 1 --out runs/nemesis-30m  # the long run (root: disk-full)
    .venv/bin/python experiments/nemesis/run.py --minutes 0 --agents 3 --rounds 2 --seed 7 --out /tmp/nemesis  # CI: one task

Each task is one ``bpcv demo`` with an external broker: its coordinator, requester and standby agent
reach mosquitto through one socat proxy, and each active agent (five by default) is its own OS process
reaching it through its own proxy, so that each can be cut off, killed or paused alone
(``faults.py``). Faults are drawn from the agents' start (TensorFlow loading) until the task's last round starts; the last round
runs quiet, so that every node that came back can catch up while the coordinator, which answers range
sync, is still there. Then the checks (``invariants.py``): every replica verifies, no two blocks at
one height, every replica holds every committed block, rewards sum as specified and the coordinator
reports paying what the chain records, no node's signed ε
exceeds its budget or goes down, the final model's digest is on the chain.

Writes ``OUT/log.jsonl`` (a line per fault and per task) and ``OUT/summary.json``; exit status 1 when an
invariant was violated.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder: faults, invariants
from faults import ROOT, Agent, Broker, Cluster, Disk, Nemesis, Proxy, Tap
from invariants import check_task

from broker.runner import free_port

EPSILON = 40.0  # each agent's budget: the demo's DP spends about 6 a round


class Log:
    def __init__(self, path: Path, started: float) -> None:
        self.path, self.started, self.lock = path, started, threading.Lock()

    def __call__(self, entry: dict) -> None:
        line = json.dumps({"t": round(time.monotonic() - self.started, 1), **entry})
        with self.lock, open(self.path, "a") as f:
            f.write(line + "\n")
        print(line, flush=True)


def demo_command(out: Path, broker_url: str, active: int, rounds: int, seed: int) -> list[str]:
    return [
        sys.executable, "-m", "bpcv_app.cli", "demo", "--broker", broker_url, "--out", str(out),
        "--agents", str(active + 1), "--standby", "1", "--external", str(active), "--processes", "1",
        "--rounds", str(rounds), "--min-nodes", "2", "--epsilon", str(EPSILON), "--seed", str(seed),
        "--update-timeout", "60", "--vote-timeout", "20", "--timeout", str(180 + 300 * rounds),
    ]  # fmt: skip


def wait_for(predicate, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def agents_for(out: Path, broker: Broker, coordinator_url: str, active: int) -> list[Agent]:
    """The demo's external agents, each with a copy of its config pointed at its own proxy."""
    agents = []
    for i in range(active):
        node = f"node-{i + 1:02d}"
        source = out / "configs" / f"{node}.toml"
        proxy = Proxy(broker.address, free_port())
        proxy.heal()
        config = out / "nemesis" / f"{node}.toml"
        config.write_text(source.read_text().replace(coordinator_url, proxy.url))
        agents.append(Agent(node, config, proxy, out / "nemesis" / f"{node}.log"))
    return agents


def chain_height(path: Path) -> int:
    from ledger.backends.lmdb import LmdbStore
    from ledger.errors import LedgerError

    try:
        with LmdbStore(path, readonly=True) as store:
            head = store.head()
    except (LedgerError, OSError):
        return -1
    return head[0] if head else -1


def recorded_rounds(path: Path, task: str) -> set[int]:
    """The rounds of ``task`` with a block on the replica at ``path`` (a decided round whose block no
    proposer delivered in time has none: the task goes on, and that round's votes are not recorded)."""
    from ledger.audit import audit_task
    from ledger.errors import LedgerError

    try:
        return {r.round for r in audit_task(path, task).rounds}
    except (LedgerError, OSError):
        return set()


def run_task(number: int, args: argparse.Namespace, broker: Broker, rng: random.Random, log: Log) -> dict:
    out = args.out / f"task-{number:03d}"
    (out / "nemesis").mkdir(parents=True)
    coordinator_proxy = Proxy(broker.address, free_port())
    coordinator_proxy.heal()
    with open(out / "nemesis" / "demo.log", "wb") as demo_log:
        demo = subprocess.Popen(
            demo_command(out, coordinator_proxy.url, args.agents, args.rounds, number),
            stdout=demo_log,
            stderr=demo_log,
            cwd=ROOT,
        )
    configs = [out / "configs" / f"node-{i + 1:02d}.toml" for i in range(args.agents)]
    if not wait_for(lambda: all(c.exists() for c in configs) or demo.poll() is not None, 120) or demo.poll():
        demo.kill()
        raise SystemExit(f"task {number}: the demo wrote no agent configs (see {out / 'nemesis' / 'demo.log'})")
    agents = agents_for(out, broker, coordinator_proxy.url, args.agents)
    last = agents[-1]
    disk = Disk(out / "nodes" / last.node / "chain") if args.disk_full else None
    tap = Tap(broker.address)
    tap.bus.connect()
    cluster = Cluster(broker, coordinator_proxy, agents, out / "configs" / "coordinator.toml", tap, disk)
    nemesis = Nemesis(cluster, rng, lambda e: log({"task": number, **e}))
    stop = threading.Event()

    def inject() -> None:
        while not stop.is_set() and tap.round < args.rounds:
            nemesis.step(stop)

    injector = threading.Thread(target=inject, daemon=True)
    try:
        if disk is not None and not disk.usable:
            log({"task": number, "disk-full": f"not injected: cannot mount a tmpfs ({disk.why})"})
        for agent in agents:
            agent.start()
        injector.start()
        while demo.poll() is None:
            if not stop.is_set() and tap.round >= args.rounds:  # the last round runs without faults
                stop.set()
                injector.join()
                cluster.recover()
            time.sleep(0.5)
        stop.set()
        injector.join()
        cluster.recover()
        summary_file = out / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        replicas = {"coordinator": out / "nodes" / "coordinator" / "chain"}
        replicas.update({Path(p).parent.name: Path(p) for p in summary.get("replicas", [])})
        replicas.update({a.node: out / "nodes" / a.node / "chain" for a in agents})
        top = chain_height(replicas["coordinator"])
        wait_for(lambda: all(chain_height(p) >= top for p in replicas.values()), 30)  # the last block arriving
        for agent in agents:
            agent.stop()
        task = summary.get("task") or {}
        finished = summary and summary.get("aborted_round") is None  # an aborted task records no final model
        final_digest = summary.get("final_model_digest") if finished else None
        paid = {n["id"]: n["reward"] for n in summary.get("nodes", [])}
        violations = check_task(replicas, task.get("task_id", ""), EPSILON, final_digest, paid)
        decided = {r["round"] for r in summary.get("rounds", [])}
    finally:
        stop.set()
        if demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=60)
        for agent in agents:
            agent.stop()
        tap.bus.close()
        for proxy in [coordinator_proxy, *(a.proxy for a in agents)]:
            proxy.cut()
        if disk is not None:
            disk.unmount()
    entry = {
        "task": number,
        "demo_exit": demo.returncode,
        "rounds": len(summary.get("rounds", [])),
        "stopped_because": summary.get("stopped_because"),
        "final_accuracy": summary.get("final_accuracy"),
        "height": top,
        "rounds_without_block": sorted(decided - recorded_rounds(replicas["coordinator"], task.get("task_id", ""))),
        "replicas": len(replicas),
        "faults": dict(sorted(nemesis.counts.items())),
        "violations": violations,
    }
    log({"checked": True, **entry})
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="start no new task after this (default 30; 0: one task)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=4, help="rounds per task (default 4)")
    p.add_argument(
        "--agents", type=int, default=5,
        help="active agents, each its own process behind its own proxy (default 5); the demo adds one standby",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "nemesis")
    p.add_argument(
        "--disk-full", action=argparse.BooleanOptionalAction, default=True,
        help="fill a tmpfs under one replica (needs the right to mount; skipped with a line when denied)",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.out = args.out.resolve()  # the coordinator is found by its config's absolute path
    args.out.mkdir(parents=True, exist_ok=False)
    started = time.monotonic()
    log = Log(args.out / "log.jsonl", started)
    rng = random.Random(args.seed)
    broker = Broker(free_port(), args.out / "broker")
    broker.start()
    tasks = []
    try:
        while not tasks or time.monotonic() - started < args.minutes * 60:  # at least one task
            tasks.append(run_task(len(tasks) + 1, args, broker, rng, log))
    finally:
        broker.stop()
    faults: dict[str, int] = {}
    for t in tasks:
        for kind, n in t["faults"].items():
            faults[kind] = faults.get(kind, 0) + n
    summary = {
        "seed": args.seed,
        "agents": args.agents,
        "rounds_per_task": args.rounds,
        "wall_s": round(time.monotonic() - started),
        "tasks": len(tasks),
        "tasks_completed": sum(t["demo_exit"] == 0 for t in tasks),
        "faults": sum(faults.values()),
        "faults_by_kind": dict(sorted(faults.items())),
        "violations": [f"task {t['task']}: {v}" for t in tasks for v in t["violations"]],
        "disk_full": "injected" if faults.get("disk-full") else "not injected (no right to mount, or not drawn)",
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
