"""A retained task outlives its task on the broker: agents and the coordinator refuse one that cannot
still be running, with a reason, and take the next fresh task. (Over a real mosquitto, with the
requester's withdrawal: tests/integration/test_retained_tasks.py.)"""

import logging
import queue
import time

from bpcv.envelope import seal
from bpcv.intake import STALE_TASK_GRACE_S, stale_task
from bpcv.topics import Topics
from edge_agent.agent import Agent
from tests.helpers import FakeTrainer, agent_config, offline_coordinator

TOPICS = Topics()


def lifetime(task) -> float:
    return task.join_timeout_s + task.join_window_s + task.time_limit_s


def posted_ago(c, seconds: float, task_id: str = "t1"):
    """``c``'s task (renamed ``task_id``) as the requester would have signed it ``seconds`` ago."""
    body = {**c.task.to_body(), "task_id": task_id}
    return seal(c.requester, "task", task_id, 0, body, ts=time.time() - seconds)


def test_a_task_is_stale_only_once_it_cannot_still_be_running(consortium):
    c, _ = consortium
    limit = lifetime(c.task) + STALE_TASK_GRACE_S
    now = time.time()
    assert stale_task(posted_ago(c, limit - 60), c.task, now) is None
    why = stale_task(posted_ago(c, limit + 60), c.task, now)
    assert why is not None and "t1" in why and "earlier task" in why


def test_agent_ignores_a_stale_retained_task_and_takes_the_next_fresh_one(consortium, caplog):
    c, tmp = consortium
    agent = Agent(agent_config(tmp), queue.Queue(), lambda *a: FakeTrainer())
    stale = posted_ago(c, lifetime(c.task) + STALE_TASK_GRACE_S + 60, task_id="old")
    with caplog.at_level(logging.WARNING):
        agent.handle(TOPICS.task("old"), stale.raw)
    assert agent.task is None and agent.intake.rejected["stale-task"] == 1
    assert "task old was posted" in caplog.text
    agent.handle(TOPICS.task("t1"), c.task_env.raw)
    assert agent.task is not None and agent.task.task_id == "t1"
    agent.replica.close()


def test_coordinator_runs_a_fresh_task_but_not_a_stale_one_or_a_withdrawn_one(consortium, caplog):
    c, tmp = consortium
    coord = offline_coordinator(c, tmp, list(c.agents), [(3, 2), (2,)])
    stale = posted_ago(c, lifetime(c.task) + STALE_TASK_GRACE_S + 60)
    with caplog.at_level(logging.WARNING):
        assert coord.runner_for(TOPICS.task("t1"), stale.raw) is None
    assert "a retained message left by an earlier task" in caplog.text
    assert coord.runner_for(TOPICS.task("t1"), b"") is None
    assert coord.runner_for(TOPICS.task("t1"), c.task_env.raw) is not None
    coord.close()
