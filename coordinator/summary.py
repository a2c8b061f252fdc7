"""What the coordinator reports about a task: one typed row per round, and the task summary that
``coordinator.json`` holds (read by ``bpcv demo``, ``bpcv report`` and the tests).

The JSON keeps the metric's own name as the key of its value (``"accuracy": 0.97`` or ``"mae": 1.2``)
in each row, and ``final_<metric>`` in the summary, as it always has.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bpcv.task import CATEGORIES
from coordinator.rounds import RoundOutcome


@dataclass(kw_only=True)
class RoundRow:
    """One decided round: the decision, then (once the round's block is in) where it is on the chain."""

    round: int
    metric: str
    value: float | None  # None: nothing to score on (no agent reported a validation score)
    eliminated: str | None
    eliminated_reason: str | None
    invalid: dict[str, str]
    dropped: list[str]
    left: list[str]
    admitted: list[str]
    aggregated: list[str]
    excluded: list[str]
    ranking: list[str]
    quality: dict[str, float]
    proposer: str | None
    rewards: dict[str, float]
    block_proposer: str | None = None
    block_rank: int | None = None
    on_chain: bool = False
    chain_height: int = 0
    elapsed_s: float = 0.0
    other_metrics: dict[str, float | None] = field(default_factory=dict)  # regression: rmse beside mae
    dissenters: list[str] = field(default_factory=list)  # voters whose votes did not count (accountable voters)

    @classmethod
    def decided(
        cls,
        round_no: int,
        metric: str,
        value: float | None,
        outcome: RoundOutcome,
        left: list[str],
        other_metrics: dict[str, float | None] | None = None,
    ) -> RoundRow:
        return cls(
            round=round_no,
            metric=metric,
            value=None if value is None else round(value, 6),
            other_metrics=dict(other_metrics or {}),
            eliminated=outcome.eliminated,
            eliminated_reason=outcome.eliminated_reason,
            invalid=outcome.invalid,
            dropped=outcome.dropped,
            left=left,
            admitted=outcome.admitted,
            aggregated=outcome.aggregated,
            excluded=outcome.excluded,
            ranking=outcome.ranking,
            quality={n: round(q, 6) for n, q in outcome.quality.items()},
            proposer=outcome.proposer,
            rewards=outcome.rewards,
            dissenters=outcome.dissenters,
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        metric, value = out.pop("metric"), out.pop("value")
        return {"round": out.pop("round"), metric: value, **out}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> RoundRow:
        known = {f.name for f in fields(cls)}
        (metric,) = [k for k in row if k not in known]
        rest = {k: v for k, v in row.items() if k != metric}
        return cls(metric=metric, value=row[metric], **rest)


@dataclass(kw_only=True)
class NodeSummary:
    """What became of one node in the task."""

    status: str  # a coordinator.checkpoint.NodeStatus value
    reward: float
    num_samples: int
    left_because: str | None
    privacy: dict[str, Any]


@dataclass(kw_only=True)
class TaskSummary:
    """The task's record in the run folder (``coordinator.json``)."""

    task: dict[str, Any]
    metric: str
    rounds: list[RoundRow] = field(default_factory=list)
    nodes: dict[str, NodeSummary] = field(default_factory=dict)
    stopped_because: str | None = None
    aborted_round: dict[str, Any] | None = None
    final_model_digest: str | None = None
    error: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    chain: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    evaluated_on: str = "test set"  # or the agents' validation scores (coordinator.evaluation)

    @property
    def final_value(self) -> float | None:
        """The metric of the last decided round's global model."""
        return self.rounds[-1].value if self.rounds else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "rounds": [r.to_json() for r in self.rounds]}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["stopped_because"] = self.stopped_because
            if self.aborted_round:
                out["aborted_round"] = self.aborted_round
            out[f"final_{self.metric}"] = self.final_value
            out["evaluated_on"] = self.evaluated_on
            out["final_model_digest"] = self.final_model_digest
        out["nodes"] = {n: asdict(s) for n, s in self.nodes.items()}
        out["rejected"] = self.rejected
        out["chain"] = self.chain
        if self.duration_s is not None:
            out["duration_s"] = self.duration_s
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskSummary:
        """Read ``coordinator.json`` back; KeyError, TypeError or ValueError for a file this version did not
        write (the metric follows from the task's category, as when it was written)."""
        task = dict(data["task"])
        return cls(
            task=task,
            metric=CATEGORIES[task.get("category", "classification")],
            rounds=[RoundRow.from_json(r) for r in data["rounds"]],
            nodes={n: NodeSummary(**s) for n, s in data.get("nodes", {}).items()},
            stopped_because=data.get("stopped_because"),
            aborted_round=data.get("aborted_round"),
            final_model_digest=data.get("final_model_digest"),
            error=data.get("error"),
            rejected=dict(data.get("rejected", {})),
            chain=dict(data.get("chain", {})),
            duration_s=data.get("duration_s"),
            evaluated_on=data.get("evaluated_on", "test set"),
        )
