"""An agent's status in its task: a ``str`` enum, so logs, status messages and any JSON keep the text."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """Where an agent stands in its task; the value is the text logs and status messages show."""

    IDLE = "idle"  # no task yet
    JOINED = "joined"  # answered a task, in no roster yet
    ACTIVE = "active"  # in the current round's roster
    STANDBY = "standby"  # joined, not in the current round's roster
    ELIMINATED = "eliminated"  # removed from the task (lowest quality, or an invalid update)
    DONE = "done"  # the task ended (its final round, or an abort)
    LEFT = "left"  # stopped contributing (privacy budget spent)

    def __str__(self) -> str:
        return self.value


ENDED = (Status.ELIMINATED, Status.DONE, Status.LEFT)
