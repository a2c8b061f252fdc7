"""The CSV files the live-cell experiments (attacks/, convergence/, dp_accuracy/) write and read: one line
per finished cell, appended as it finishes, so an interrupted matrix resumes."""

from __future__ import annotations

import csv
from pathlib import Path


def read_rows(path: Path) -> list[dict[str, str]]:
    """Every row of ``path`` (none when it does not exist yet)."""
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, columns: list[str], rows: list[dict[str, object]]) -> None:
    """Write ``rows`` to ``path`` afresh, header first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def append_rows(path: Path, columns: list[str], rows: list[dict[str, object]]) -> None:
    """Append ``rows`` to ``path``, writing the header first when the file is new."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def model_label(model: str) -> str:
    """The model as a results.csv names it: a preset as given, a Keras JSON file by its file name."""
    return Path(model).name if model.endswith(".json") else model
