"""The data requester's side: post a signed task (retained, so agents that connect later still see it),
and withdraw it once it has ended (so a device that connects later does not find it)."""

from __future__ import annotations

from bpcv.envelope import Envelope
from bpcv.identity import Identity
from bpcv.messages import seal_task
from bpcv.mqtt import Bus
from bpcv.task import TaskSpec
from bpcv.topics import Topics


def post_task(
    bus: Bus, requester: Identity, task: TaskSpec, topics: Topics, initial_weights: bytes | None = None
) -> Envelope:
    """Sign ``task`` (with its optional initial weights, a model blob) and publish it retained on its task
    topic; returns the envelope sent."""
    task.validate()
    env = seal_task(requester, task, initial_weights)
    if not bus.publish(topics.task(task.task_id), env.raw, retain=True):
        raise RuntimeError(f"the broker did not acknowledge task {task.task_id}")
    return env


def withdraw_task(bus: Bus, task_id: str, topics: Topics) -> None:
    """Clear the retained announcement of ``task_id`` (an empty retained message, which MQTT brokers take
    as deleting it). Agents also refuse a task too old to be running (bpcv.intake.stale_task); this keeps
    the broker from handing an ended task to every device that connects."""
    if not bus.publish(topics.task(task_id), b"", retain=True):
        raise RuntimeError(f"the broker did not acknowledge withdrawing task {task_id}")
