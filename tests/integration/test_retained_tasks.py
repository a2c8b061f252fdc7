"""Stale retained messages over a real mosquitto (reliability case: a retained task from an earlier
task present at start): an agent that connects is handed the old task by the broker, refuses it with
a reason, and joins the fresh task posted next; the requester's withdrawal clears a task from the
broker. Real MQTT clients and broker; the agent's trainer is a stand-in (no model is trained here)."""

import queue
import time

import pytest

from bpcv.envelope import seal
from bpcv.intake import STALE_TASK_GRACE_S
from bpcv.mqtt import Bus
from bpcv.topics import Topics
from bpcv_app.cli import main
from coordinator.requester import post_task, withdraw_task
from edge_agent.agent import Agent
from tests.helpers import FakeTrainer, agent_config

pytestmark = pytest.mark.integration
TOPICS = Topics()


def work_until(agent: Agent, jobs: queue.Queue, done, timeout: float = 10.0) -> bool:
    """Run ``agent``'s jobs (as its pool would) until ``done()`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        try:
            fn, args = jobs.get(timeout=0.1)
        except queue.Empty:
            continue
        fn(*args)
    return done()


def retained_tasks(address) -> set[str]:
    """The task ids a newly connecting client is handed by the broker."""
    seen: set[str] = set()
    probe = Bus("probe", address, lambda topic, payload: seen.add(TOPICS.parse(topic)[1]) if payload else None)
    probe.subscribe(TOPICS.all_tasks())
    probe.connect()
    time.sleep(1.0)
    probe.close()
    return seen


def test_agent_refuses_a_stale_retained_task_and_joins_the_fresh_one(consortium, mosquitto):
    c, tmp = consortium
    requester = Bus(c.requester.node_id, mosquitto, lambda t, p: None)
    requester.connect()
    task = c.task
    long_ago = time.time() - (task.join_timeout_s + task.join_window_s + task.time_limit_s + STALE_TASK_GRACE_S + 60)
    old = seal(c.requester, "task", "old", 0, {**task.to_body(), "task_id": "old"}, ts=long_ago)
    assert requester.publish(TOPICS.task("old"), old.raw, retain=True)

    jobs: queue.Queue = queue.Queue()
    agent = Agent(agent_config(tmp, broker=mosquitto.url()), jobs, lambda *a: FakeTrainer())
    agent.start()
    try:
        assert work_until(agent, jobs, lambda: agent.intake.rejected["stale-task"] == 1)
        assert agent.task is None
        post_task(requester, c.requester, task, TOPICS)
        assert work_until(agent, jobs, lambda: agent.task is not None)
        assert agent.task.task_id == "t1"
    finally:
        agent.stop()
        agent.replica.close()

    assert retained_tasks(mosquitto) == {"old", "t1"}
    withdraw_task(requester, "t1", TOPICS)
    requester.close()
    c.requester.save(tmp / "requester.key")
    withdrawn = ["request", "--withdraw", "--key", str(tmp / "requester.key"), "--broker", mosquitto.url()]
    assert main([*withdrawn, "--task-id", "old"]) == 0  # the operator's command for a task left behind
    assert retained_tasks(mosquitto) == set()
