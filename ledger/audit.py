"""``bpcv chain audit``: what a verified replica says happened in one task, for people.

Per round: who scored whom and how, the quality ranking, who was eliminated and admitted, the
rewards, and each node's privacy spent as it signed it; then the final model's digest. The replica
is fully verified first: an audit of a chain that does not verify is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bpcv.envelope import decode
from bpcv.messages import Evidence, Final, Result, Reward, Vote, read, read_task
from bpcv.model_spec import describe
from bpcv.task import TaskSpec
from ledger.backends.lmdb import LmdbStore
from ledger.block import decode_block
from ledger.replica import verify_store


@dataclass
class RoundRecord:
    round: int
    height: int
    proposer: str
    votes: dict[str, dict[str, float]] = field(default_factory=dict)
    epsilon_signed: dict[str, float | None] = field(default_factory=dict)
    result: Result = field(default_factory=lambda: Result([], [], [], ""))
    rank: int = 0
    rewards: dict[str, float] = field(default_factory=dict)
    final_model_digest: str | None = None
    evidence: list[str] = field(default_factory=list)  # proposers this block excludes for equivocation


@dataclass
class TaskAudit:
    task: str
    spec: TaskSpec | None
    rounds: list[RoundRecord]
    head_hash: str

    @property
    def final_model_digest(self) -> str | None:
        finals = [r.final_model_digest for r in self.rounds if r.final_model_digest]
        return finals[-1] if finals else None


def audit_task(path: Path | str, task: str) -> TaskAudit:
    """Verify the replica at ``path``, then collect everything recorded for ``task``."""
    with LmdbStore(path, readonly=True) as store:
        report = verify_store(store)
        spec: TaskSpec | None = None
        rounds = []
        for height in range(1, report.height + 1):
            block = decode_block(store.get(height) or b"")
            if block.task != task:
                continue
            record = RoundRecord(block.round, height, block.proposer, rank=block.rank)
            for raw in block.txs:  # the replica verified: every body below was read once already
                env = decode(raw)
                if env.type == "task":
                    spec = read_task(env)
                elif env.type == "vote":
                    vote = read(env, Vote)
                    record.votes[env.sender] = vote.scores
                    record.epsilon_signed[env.sender] = vote.epsilon_spent
                elif env.type == "result":
                    record.result = read(env, Result)
                elif env.type == "reward":
                    record.rewards = read(env, Reward).rewards
                elif env.type == "final":
                    record.final_model_digest = read(env, Final).model_digest
                elif env.type == "evidence":
                    record.evidence.append(read(env, Evidence).accused)
            rounds.append(record)
    return TaskAudit(task, spec, sorted(rounds, key=lambda r: r.round), report.head_hash)


def format_audit(a: TaskAudit) -> list[str]:
    """The audit as lines of text."""
    if not a.rounds:
        return [f"task {a.task}: nothing recorded on this chain"]
    s = a.spec
    lines = [
        f"task {a.task}: {s.category} on {s.dataset} with {describe(s.model)}, coordinator {s.coordinator}, "
        f"reward {s.reward_per_round} per round, quality rule {s.quality_rule}"
        if s is not None
        else f"task {a.task}: (its task transaction is not on this chain)",
        f"chain head {a.head_hash} (replica verified)",
    ]
    totals: dict[str, float] = {}
    for r in a.rounds:
        res = r.result
        stand_in = f", standing in at PoQ rank {r.rank}" if r.rank else ""
        lines.append(
            f"\nround {r.round} (block {r.height}, proposer {r.proposer}{stand_in}): "
            f"{res.metric} {res.value}"
        )
        targets = sorted({t for scores in r.votes.values() for t in scores})
        width = max([8, *(len(n) for n in [*targets, *r.votes])])
        lines.append(f"  votes, row scored column:\n  {'':>{width}}  " + " ".join(f"{t:>{width}}" for t in targets))
        for voter in sorted(r.votes):
            cells = " ".join(
                f"{r.votes[voter][t]:>{width}.4f}" if t in r.votes[voter] else f"{'-':>{width}}" for t in targets
            )
            lines.append(f"  {voter:>{width}}: {cells}")
        lines.append("  ranking: " + ", ".join(f"{n} ({res.quality.get(n, 0):.4f})" for n in res.ranking))
        removed = [f"{res.eliminated} (lowest quality)"] if res.eliminated else []
        removed += [f"{n} ({why})" for n, why in sorted(res.invalid.items())]
        lines.append(
            f"  eliminated: {', '.join(removed) or '-'} | admitted: {', '.join(res.admitted) or '-'}"
            f" | dropped: {', '.join(res.dropped) or '-'}"
        )
        if r.evidence:
            lines.append("  equivocation evidence, proposer excluded: " + ", ".join(r.evidence))
        rewards = r.rewards
        for node, amount in rewards.items():
            totals[node] = totals.get(node, 0.0) + amount
        lines.append("  rewards: " + ", ".join(f"{n} {v:.2f}" for n, v in sorted(rewards.items())))
        eps = {n: e for n, e in r.epsilon_signed.items() if e is not None}
        lines.append(
            "  privacy spent (signed by each voter): "
            + (", ".join(f"{n} ε={e:.4g}" for n, e in sorted(eps.items())) or "no DP")
        )
    lines.append("\nrewards in total: " + ", ".join(f"{n} {v:.2f}" for n, v in sorted(totals.items())))
    lines.append(f"final model digest: {a.final_model_digest or '(task not finished on this chain)'}")
    return lines
