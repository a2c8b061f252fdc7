"""Benchmark: verify-and-append throughput of an LMDB replica, in vote transactions per second.

    .venv/bin/python benchmarks/chain_append.py [--nodes 50] [--blocks 40] [--repeats 3]

Builds a consortium of N agents and B round blocks, each holding N signed votes (every node scores
the N-1 others, the paper's all-peer validation at 50 nodes) plus the signed round result, then times
``Replica.append`` of all blocks into a fresh LMDB replica: decode, Merkle root, proposer signature,
every vote's Ed25519 signature, PoQ recomputation, and the LMDB write transaction. Reports the median
over repeats and writes benchmarks/results/chain_append.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.replica import Replica  # noqa: E402
from tests.helpers import honest_scores, make_consortium, round_block  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/chain_append.json")
    args = parser.parse_args()

    c = make_consortium(n_agents=args.nodes)
    agents = list(c.agents)
    builder = Replica.open(None, c.genesis.raw)
    blocks = []
    for r in range(1, args.blocks + 1):
        block = round_block(
            c,
            builder.height + 1,
            builder.head_hash,
            r,
            honest_scores(agents, bad=agents[r % len(agents)]),
            include_task=(r == 1),
        )
        builder.append(block.raw)
        blocks.append(block.raw)
    votes = args.blocks * args.nodes
    seconds = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            replica = Replica.open(Path(tmp) / "chain", c.genesis.raw)
            start = time.perf_counter()
            for raw in blocks:
                replica.append(raw)
            seconds.append(time.perf_counter() - start)
            replica.close()
    median = statistics.median(seconds)
    result = {
        "what": f"{args.blocks} blocks x {args.nodes} votes (each scoring {args.nodes - 1} peers) "
        "+ result + reward split, verified and appended to a fresh LMDB replica",
        "median_seconds": round(median, 3),
        "all_seconds": [round(s, 3) for s in seconds],
        "vote_tx_per_second": round(votes / median),
        "blocks_per_second": round(args.blocks / median, 1),
        "mean_block_bytes": round(sum(map(len, blocks)) / len(blocks)),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
