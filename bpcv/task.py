"""The task a data requester posts: what to learn, with which model, for how long, for what reward."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

from bpcv.codec import check_encoding
from bpcv.datasources import DataSchema
from bpcv.errors import ConfigError
from bpcv.identity import check_node_id
from bpcv.model_spec import check_keras_json, is_keras_json
from bpcv.models import parse_spec
from bpcv.poq import DISSENT_RULES, ELIMINATION_POLICIES, QUALITY_RULES

CATEGORIES = {"classification": "accuracy", "regression": "mae"}
# How the round's admitted updates are combined (coordinator/strategies implements each; a test checks
# that the two lists agree). "bpcv" is the paper's rule; "fltrust" trains on a root data set the
# coordinator takes from its held-out test data, so it needs one.
STRATEGIES = ("bpcv", "fedavg", "median", "trimmed-mean", "multi-krum", "fedpage", "overlap-fedavg", "fltrust")
LOCAL = "local"  # the dataset of a task on each device's own data, read against the task's ``data`` schema


def has_fixed_layers(model: str) -> bool:
    """Whether a model spec has weights it never trains: the wavelet map, or a Keras layer marked untrainable."""
    if is_keras_json(model):
        layers = json.loads(model).get("config", {}).get("layers", [])
        return any(isinstance(layer, dict) and layer.get("config", {}).get("trainable") is False for layer in layers)
    return model.startswith("wavelet:")


@dataclass(frozen=True)
class TaskSpec:
    """Everything agents and the coordinator need to run one federated task."""

    task_id: str
    coordinator: str
    chain: str = "main"
    category: str = "classification"
    dataset: str = "mnist"
    model: str = "mlp:128"
    rounds: int = 10
    time_limit_s: float = 3600.0
    target: float | None = None
    reward_per_round: float = 100.0
    nodes: int = 10
    min_nodes: int = 5
    local_epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 0.2
    lr_decay: float = 1.0  # round r trains at learning_rate * lr_decay ** (r - 1): 1 keeps it constant
    quality_rule: str = "mean"
    join_timeout_s: float = 120.0
    join_window_s: float = 2.0
    update_timeout_s: float = 300.0
    vote_timeout_s: float = 120.0
    block_timeout_s: float = 15.0  # how long the node at PoQ rank k waits before it proposes, times k
    proposer_fallbacks: int = 2  # how many next-ranked nodes stand in for a silent PoQ winner
    strategy: str = "bpcv"  # how the admitted updates are combined: one of STRATEGIES
    elimination: str = "lowest"  # who is eliminated each round: one of bpcv.poq.ELIMINATION_POLICIES
    accountable_voters: bool = False  # dissenting voters' votes do not count, they are unpaid, and eliminated
    dissent_rule: str = "distance"  # how dissenters are found: one of bpcv.poq.DISSENT_RULES (absent: as before it)
    data: dict[str, Any] | None = None  # with dataset "local": the DataSchema body each device reads its file by
    update_encoding: str = "float32"  # how agents send their updates: one of bpcv.codec.ENCODINGS
    committee: int = 0  # each node scores this many peers drawn from a block hash (bpcv.committee); 0: every peer
    supervised: bool = True  # False: plain federated learning (no votes, ranking, elimination or chain records)

    @property
    def metric(self) -> str:
        return CATEGORIES[self.category]

    @property
    def voter_dissent(self) -> str | None:
        """The rule that finds the round's dissenting voters, or None when voters are not held to account."""
        return self.dissent_rule if self.accountable_voters else None

    @cached_property
    def schema(self) -> DataSchema | None:
        """The input a local-data task declares (None for a packaged benchmark set such as MNIST); parsed
        once per task (the agent asks every round)."""
        return DataSchema.from_body(self.data) if self.data is not None else None

    def learning_rate_in(self, round_no: int) -> float:
        """The local learning rate of round ``round_no`` (1, 2, ...): decayed by ``lr_decay`` each round."""
        return float(self.learning_rate) * float(self.lr_decay) ** max(0, round_no - 1)

    def input_shape(self) -> tuple[int, ...] | None:
        """One sample's shape, where the task alone fixes it (a local-data task's schema)."""
        schema = self.schema
        return schema.input_shape() if schema is not None else None

    def to_body(self) -> dict[str, Any]:
        body = asdict(self)
        if self.data is None:
            del body["data"]  # tasks on packaged sets travel exactly as they always have
        paper_rules = (
            ("strategy", "bpcv"),
            ("elimination", "lowest"),
            ("accountable_voters", False),
            ("dissent_rule", "distance"),
            ("lr_decay", 1.0),
            ("update_encoding", "float32"),
            ("committee", 0),
            ("supervised", True),
        )
        for name, paper in paper_rules:
            if body[name] == paper:
                del body[name]  # and so do tasks run by the paper's rules
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> TaskSpec:
        """Build from a task body, naming the first wrong or missing field."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise ConfigError(f"task: unknown field(s) {unknown}")
        try:
            spec = cls(**body)
            spec.validate()
        except (TypeError, ValueError, OverflowError) as exc:  # a field of the wrong type, e.g. "reward_per_round": "x"
            raise ConfigError(f"task: a field has the wrong type: {exc}") from exc
        return spec

    def validate(self) -> None:
        check_node_id(self.task_id)
        check_node_id(self.coordinator)
        check_node_id(self.chain)
        if self.category not in CATEGORIES:
            raise ConfigError(f"task: category must be one of {sorted(CATEGORIES)}, not {self.category!r}")
        self.check_model()
        self.check_data()
        if self.quality_rule not in QUALITY_RULES:
            raise ConfigError(f"task: quality_rule must be one of {QUALITY_RULES}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"task: strategy must be one of {STRATEGIES}, not {self.strategy!r}")
        if self.elimination not in ELIMINATION_POLICIES:
            raise ConfigError(f"task: elimination must be one of {ELIMINATION_POLICIES}, not {self.elimination!r}")
        try:
            check_encoding(self.update_encoding)
        except ConfigError as exc:
            raise ConfigError(f"task: update_encoding: {exc}") from exc
        if not self.update_encoding.startswith("float32") and has_fixed_layers(self.model):
            raise ConfigError(
                f"task: update_encoding {self.update_encoding} would change the model's fixed layers (weights it "
                "never trains, such as the wavelet map), which agents compute once and must stay exact: use float32 "
                "or float32+deflate"
            )
        if not isinstance(self.accountable_voters, bool):
            raise ConfigError(f"task: accountable_voters must be true or false, not {self.accountable_voters!r}")
        if self.dissent_rule not in DISSENT_RULES:
            raise ConfigError(f"task: dissent_rule must be one of {DISSENT_RULES}, not {self.dissent_rule!r}")
        for name in ("rounds", "nodes", "min_nodes", "local_epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"task: {name} must be a positive integer, not {value!r}")
        if not isinstance(self.supervised, bool) or (not self.supervised and self.strategy == "bpcv"):
            raise ConfigError(
                "task: supervised is true or false, and a task without supervision (no votes, so no ranking) "
                "needs a strategy other than bpcv, which leaves out the lowest-ranked update: e.g. fedavg"
            )
        if (
            not isinstance(self.committee, int)
            or isinstance(self.committee, bool)
            or not (self.committee == 0 or self.committee >= 3)
        ):
            raise ConfigError(
                f"task: committee must be 0 (every peer scores every update) or at least 3 (a median of the "
                f"scores needs three judges), not {self.committee!r}"
            )
        if self.min_nodes > self.nodes:
            raise ConfigError(f"task: min_nodes {self.min_nodes} > nodes {self.nodes}")
        for name in (
            "time_limit_s",
            "learning_rate",
            "join_timeout_s",
            "update_timeout_s",
            "vote_timeout_s",
            "block_timeout_s",
        ):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"task: {name} must be > 0")
        if not 0 < float(self.lr_decay) <= 1:
            raise ConfigError(f"task: lr_decay must be in (0, 1], not {self.lr_decay!r}")
        if self.reward_per_round < 0:
            raise ConfigError("task: reward_per_round must be >= 0")
        if not isinstance(self.proposer_fallbacks, int) or self.proposer_fallbacks < 0:
            raise ConfigError(f"task: proposer_fallbacks must be an integer >= 0, not {self.proposer_fallbacks!r}")

    def check_data(self) -> None:
        """A local-data task carries its schema, whose category is the task's; other tasks carry none."""
        if (self.dataset == LOCAL) != (self.data is not None):
            raise ConfigError(f'task: a task on the devices\' own data has dataset = "{LOCAL}" and a data schema')
        schema = self.schema
        if schema is not None and schema.category != self.category:
            raise ConfigError(f"task: the data schema is {schema.category}, the task {self.category}")

    def check_model(self) -> None:
        """The model field: a preset spec, or Keras JSON against the allow-list and size cap (no TensorFlow)."""
        if not isinstance(self.model, str):
            raise ConfigError(f"task: model must be a string, not {type(self.model).__name__}")
        try:
            check_keras_json(self.model) if is_keras_json(self.model) else parse_spec(self.model)
        except ConfigError as exc:
            raise ConfigError(f"task: {exc}") from exc
