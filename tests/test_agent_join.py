"""An agent's join to a task is sent again until a global model answers it."""

import queue

from bpcv.topics import Topics
from edge_agent.agent import Agent
from tests.helpers import FakeTrainer, agent_config

TOPICS = Topics()


class RecordingBus:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish(self, topic: str, payload: bytes, **_: object) -> bool:
        self.sent.append(topic)
        return True

    def subscribe(self, topic: str) -> None:
        pass


def test_a_join_no_global_model_answers_is_sent_again_until_one_does(consortium, monkeypatch):
    """A join can be lost (a broker restart) or forgotten (a coordinator killed before it saved its
    roster): the agent joins again until a global model tells it where it stands."""
    import edge_agent.agent as agent_module
    from edge_agent.status import Status

    monkeypatch.setattr(agent_module, "JOIN_AGAIN_S", 0.1)
    c, tmp = consortium
    jobs: queue.Queue = queue.Queue()
    agent = Agent(agent_config(tmp), jobs, lambda *a: FakeTrainer())
    agent.bus = RecordingBus()

    def run_next_job() -> None:
        fn, args = jobs.get(timeout=5)
        fn(*args)

    agent.handle(TOPICS.task("t1"), c.task_env.raw)
    for _ in range(3):  # the join, then twice again
        run_next_job()
    joins = [t for t in agent.bus.sent if t == TOPICS.join("t1", "node-01")]
    assert len(joins) == 3
    agent.status = Status.STANDBY  # a global model arrived: the roster is formed
    run_next_job()
    assert len([t for t in agent.bus.sent if t == TOPICS.join("t1", "node-01")]) == 3
    agent.replica.close()
