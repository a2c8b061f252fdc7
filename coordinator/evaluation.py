"""How the coordinator scores the global model each round: the task's global metric.

- A packaged benchmark set (MNIST, CIFAR-10): its test split, held by the coordinator.
- A task on the devices' own data, with a requester's test file (the coordinator config's
  ``data_path``, read against the task's schema like any device's file): that file.
- A task on the devices' own data without one: the mean of the agents' own validation scores,
  weighted by their sample counts. Each agent reports, with its round-r update, how the global model
  it received (the aggregate of round r-1) scores on its validation split, so this metric runs one
  round behind the test-set one. Only agents whose update was aggregated are counted, so an eliminated
  or excluded node's report does not move it; a node that stays in can still report what it likes,
  which is why a requester who can hold a test file should.

``build_evaluation`` also builds the model the coordinator aggregates into (its shapes and initial
weights), since the input shape comes from the same place as the test data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bpcv.data import load_dataset
from bpcv.datasources import read_local
from bpcv.errors import ConfigError
from bpcv.fixed_prefix import FixedPrefix
from bpcv.local_split import Standardizer, feature_axes
from bpcv.metrics import METRICS, scores
from bpcv.models import build_model
from bpcv.task import TaskSpec
from coordinator.collector import RoundCollector

TEST_SET = "test set"
VALIDATION_MEAN = "agents' validation splits (a round's value scores the model of the round before)"


@dataclass
class Evaluation:
    """Scores a round's global model; ``source`` says on what (the summary shows it)."""

    task: TaskSpec
    source: str
    model: Any = None  # a Keras model, when scoring on a test set
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        # the test set's fixed features (a wavelet map), computed once for the task, not every round
        self.prefix = FixedPrefix(self.model) if self.model is not None else None

    def __call__(
        self,
        weights: list[np.ndarray],
        val_scores: Mapping[str, Mapping[str, float]],
        samples: Mapping[str, int],
    ) -> dict[str, float]:
        """{metric: value}, the task's metric first. ``val_scores``: the aggregated agents' reports."""
        if self.prefix is not None:
            return scores(self.prefix.outputs(weights, self.x_test), self.y_test, self.task.category)
        return weighted_validation(self.task.category, val_scores, samples)

    def of_round(
        self, weights: list[np.ndarray], aggregated: list[str], collector: RoundCollector
    ) -> dict[str, float | None]:
        """The round's metrics, rounded (None where there was nothing to score on); ``collector``: the
        round's ``RoundCollector``, whose aggregated agents' reports count."""
        reports = {n: collector.inbox.val_scores[n] for n in aggregated if n in collector.inbox.val_scores}
        metrics = self(weights, reports, {n: collector.joined.samples(n) for n in reports})
        return {m: round(v, 6) if math.isfinite(v) else None for m, v in metrics.items()}


def weighted_validation(
    category: str, val_scores: Mapping[str, Mapping[str, float]], samples: Mapping[str, int]
) -> dict[str, float]:
    """The sample-weighted mean of the agents' reports (RMSE combined as the root of the weighted mean
    square, which is the pooled RMSE when validation sizes follow sample counts). NaN when none came."""
    names = METRICS[category]
    reports = {n: s for n, s in val_scores.items() if all(m in s for m in names)}
    total = sum(samples.get(n, 0) for n in reports)
    if not reports or total <= 0:
        return {m: math.nan for m in names}
    out = {}
    for m in names:
        square = m == "rmse"
        mean = sum(samples.get(n, 0) * (s[m] ** 2 if square else s[m]) for n, s in reports.items()) / total
        out[m] = math.sqrt(mean) if square else mean
    return out


def build_evaluation(task: TaskSpec, data_path: str) -> tuple[Any, Evaluation]:
    """The task's model (uncompiled, seed 0) and how its global metric is computed."""
    schema = task.schema
    if schema is None:
        dataset = load_dataset(task.dataset, data_path or None)
        model = build_model(task.model, dataset.input_shape, dataset.num_classes, seed=0)
        return model, Evaluation(task, TEST_SET, model, dataset.x_test, dataset.y_test)
    if data_path:
        test = read_local(data_path, schema)
        x = Standardizer.fit(test.x, feature_axes(schema.kind, test.x.ndim)).apply(test.x)
        model = build_model(task.model, tuple(x.shape[1:]), schema.outputs, seed=0)
        return model, Evaluation(task, TEST_SET, model, x, test.y)
    shape = schema.input_shape()
    if shape is None:
        raise ConfigError(
            f"task {task.task_id}: the schema fixes no input shape (arrays without shape) and there is no test file"
        )
    return build_model(task.model, shape, schema.outputs, seed=0), Evaluation(task, VALIDATION_MEAN)
