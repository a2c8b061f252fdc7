"""The per-round breakdown: an agent's clock (on a fake time source), the signed message that carries it,
its rows in metrics.sqlite and the table `bpcv report` makes of them, each checked against a hand count.
(The live run of tests/integration/test_live_task.py checks that real agents' breakdowns arrive.)"""

import sqlite3

import pytest

from bpcv.envelope import open_envelope
from bpcv.errors import Rejected
from bpcv.identity import Identity, Registry
from bpcv.messages import RoundTimes, read
from bpcv.topics import TRAFFIC_KINDS, Topics
from bpcv_app.report import breakdown_markdown, timeline_markdown
from bpcv_app.rundata import coordinator_timeline, round_breakdown
from coordinator.timeseries import TimeSeries
from edge_agent.round_clock import RoundClock


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def tick(self, seconds: float) -> None:
        self.t += seconds


def test_a_phase_inside_another_is_taken_out_of_it_and_the_rest_of_the_window_is_waiting():
    now = FakeTime()
    clock = RoundClock(now)
    assert clock.begin(1) is None  # nothing to report before the first round

    def global_model():
        now.tick(0.5)  # decoding, bookkeeping: protocol
        with clock.phase("train"):
            now.tick(3.0)
            with clock.phase("privacy"):
                now.tick(0.25)
            now.tick(1.0)
        with clock.phase("sign"):
            now.tick(0.125)

    clock.run(global_model)
    now.tick(2.0)  # nothing to do: waiting for peers
    clock.run(lambda: now.tick(0.375))  # a job with no inner phase (a chain message, say)

    def next_global():
        now.tick(0.25)
        times = clock.begin(2)
        now.tick(7.0)  # the new round's work, not the closed round's
        return times

    box = []
    clock.run(lambda: box.append(next_global()))
    times = box[0]
    assert times == RoundTimes(1, 7.5, {"protocol": 1.125, "train": 4.0, "privacy": 0.25, "sign": 0.125})
    assert times.waiting_s == pytest.approx(2.0)  # the 2 s between the jobs
    now.tick(1.0)
    assert clock.begin(3) == RoundTimes(2, 8.0, {"protocol": 7.0})  # counting started again at round 2


def test_the_clock_adds_up_each_windows_received_bytes_by_kind():
    clock = RoundClock(FakeTime())
    closed = []
    clock.handled("task", 300, lambda: None)  # before the first round: not reported
    clock.handled("global", 900, lambda: closed.append(clock.begin(1)))  # opens round 1: counts in it
    assert closed == [None]
    for kind, nbytes in (("update", 400), ("update", 400), ("block", 70)):
        clock.handled(kind, nbytes, lambda: None)
    with pytest.raises(ValueError):  # a handler that fails: its message was still received
        clock.handled("block", 30, int, "not a number")
    clock.handled("global", 1000, lambda: closed.append(clock.begin(2)))
    assert closed[1] == RoundTimes(1, 0.0, {}, {"block": 100, "global": 900, "update": 800})
    clock.handled("result", 5, lambda: None)
    assert clock.begin(3).received == {"global": 1000, "result": 5}  # counting started again at round 2


def test_a_messages_traffic_kind_comes_from_its_topic():
    topics = Topics("site/v1")
    for topic, kind in (
        (topics.global_model("t1", 3), "global"),
        (topics.update("t1", 3, "node-02"), "update"),
        (topics.manifest("t1", 3), "manifest"),
        (topics.vote("t1", 3, "node-02"), "vote"),
        (topics.result("t1", 3), "result"),
        (topics.block("chain-1"), "block"),
        (topics.sync_blocks("chain-1", "node-02"), "sync"),
        (topics.task("t1"), "task"),
        (topics.join("t1", "node-02"), "join"),
        (topics.status("node-02"), "other"),
        ("site/v1/tasks/t1/round/3/block", "other"),  # not a round message, whatever its last level says
        ("elsewhere/v1/tasks/t1", "other"),  # outside the base: counted, never an error on the network thread
    ):
        assert topics.traffic_kind(topic) == kind, topic
    assert set(TRAFFIC_KINDS) >= {"global", "update", "manifest", "vote", "result", "block", "sync", "task"}


def test_round_times_travel_signed_and_a_bad_body_is_refused_naming_the_field():
    identity = Identity.generate("node-01")
    registry = Registry.from_body({"node-01": {"key": identity.public_key.hex(), "role": "agent"}})
    times = RoundTimes(4, 2.5, {"train": 1.5, "score": 0.5}, {"global": 140_000, "block": 9_000})
    env = open_envelope(times.sealed(identity), registry)
    assert env.round == 4 and read(env, RoundTimes) == times
    assert "received" not in RoundTimes(4, 2.5, {}).to_body()  # none counted: the body it always had
    for body, field in (
        ({"round": 4, "wall_s": 2.5, "seconds": {"mining": 1.0}}, "unknown phases ['mining']"),
        ({"round": 4, "wall_s": 2.5, "seconds": {"train": -1.0}}, "for ['train']"),
        ({"round": 4, "wall_s": 2.5, "seconds": {"train": float("nan")}}, "for ['train']"),
        ({"round": 0, "wall_s": 2.5, "seconds": {}}, "'round' is out of range"),
        ({"round": 4, "wall_s": -2.5, "seconds": {}}, "'wall_s' is out of range"),
        ({"round": 4, "seconds": {}}, "'wall_s' is missing"),
        ({"round": 4, "wall_s": 2.5, "seconds": [1.0]}, "'seconds' is not an object"),
        ({"round": 4, "wall_s": 2.5, "seconds": {}, "received": {"gossip": 1}}, "unknown kinds ['gossip']"),
        ({"round": 4, "wall_s": 2.5, "seconds": {}, "received": {"block": -1}}, "bytes for ['block']"),
        ({"round": 4, "wall_s": 2.5, "seconds": {}, "received": {"block": 1.5, "update": True}}, "['block', 'update']"),
        ({"round": 4, "wall_s": 2.5, "seconds": {}, "received": [1]}, "'received' is not an object"),
    ):
        with pytest.raises(Rejected, match="round-times: field") as caught:
            RoundTimes.from_body(body)
        assert field in str(caught.value), (body, caught.value)


def test_the_store_keeps_each_agents_rounds_and_an_older_file_has_none(tmp_path):
    store = TimeSeries(tmp_path / "metrics.sqlite")
    store.add_round_times("node-02", RoundTimes(1, 3.0, {"train": 1.0, "score": 0.5}))
    store.add_round_times("node-01", RoundTimes(2, 4.0, {"train": 2.0}))
    store.add_round_times("node-01", RoundTimes(1, 3.5, {"train": 1.5, "ledger": 0.25}, {"global": 9, "block": 4}))
    assert store.round_times() == [
        ("node-01", RoundTimes(1, 3.5, {"train": 1.5, "ledger": 0.25}, {"global": 9, "block": 4})),
        ("node-01", RoundTimes(2, 4.0, {"train": 2.0})),
        ("node-02", RoundTimes(1, 3.0, {"train": 1.0, "score": 0.5})),
    ]
    store.close()
    older = tmp_path / "older.sqlite"
    sqlite3.connect(older).execute("CREATE TABLE samples (node TEXT)").connection.commit()
    assert TimeSeries(older, readonly=True).round_times() == []
    before_bytes = tmp_path / "before_bytes.sqlite"  # phases, but from before the bytes were counted
    db = sqlite3.connect(before_bytes)
    db.execute("CREATE TABLE round_times (node TEXT, round INTEGER, wall_s REAL, phase TEXT, seconds REAL)")
    db.execute("INSERT INTO round_times VALUES ('node-01', 1, 2.0, 'train', 1.0)")
    db.commit()
    assert TimeSeries(before_bytes, readonly=True).round_times() == [("node-01", RoundTimes(1, 2.0, {"train": 1.0}))]


def test_the_breakdown_is_medians_per_agent_round_and_shares_of_all_busy_time():
    times = [
        ("node-01", RoundTimes(1, 10.0, {"train": 4.0, "score": 2.0, "sign": 1.0, "protocol": 1.0})),
        ("node-02", RoundTimes(1, 6.0, {"train": 2.0, "score": 1.0, "verify": 1.0})),
        ("node-01", RoundTimes(2, 8.0, {"train": 3.0, "score": 1.0, "sign": 1.0, "ledger": 1.0})),
    ]
    b = round_breakdown(times)
    assert b is not None and b.agent_rounds == 3 and b.median_wall_s == 8.0
    # busy seconds: 8 + 4 + 6 = 18; train 9, score 4, sign 2, verify 1, ledger 1, protocol 1
    assert list(b.busy_share) == ["train", "score", "sign", "verify", "ledger", "protocol"]  # ROUND_PHASES order
    assert b.busy_share["train"] == pytest.approx(9 / 18) and b.busy_share["sign"] == pytest.approx(2 / 18)
    assert b.overhead == pytest.approx(5 / 18)
    assert b.median_s == {
        "train": 3.0,
        "score": 1.0,
        "sign": 1.0,
        "verify": 0.0,
        "ledger": 0.0,
        "protocol": 0.0,
        "waiting": 2.0,  # waiting 2, 2, 2
    }
    text = "\n".join(breakdown_markdown(b))
    assert (
        "**27.8%** of the busy time" in text
        and "| train | 3.000 | 50.0% |" in text
        and "| waiting | 2.000 | - |" in text
    )
    assert round_breakdown([]) is None and breakdown_markdown(None) == []
    assert b.received == {} and "What an agent received" not in text  # no bytes counted: no table


def test_the_breakdown_gives_the_median_bytes_an_agent_received_by_kind():
    times = [
        ("node-01", RoundTimes(1, 4.0, {"train": 1.0}, {"global": 1000, "update": 5000, "block": 200})),
        ("node-02", RoundTimes(1, 4.0, {"train": 1.0}, {"global": 1000, "update": 3000})),
        ("node-01", RoundTimes(2, 4.0, {"train": 1.0}, {"global": 1000, "update": 4000, "block": 600})),
        ("node-03", RoundTimes(2, 4.0, {"train": 1.0})),  # counted nothing (an agent from before the count)
    ]
    b = round_breakdown(times)
    assert b is not None
    # per agent-round that counted: totals 6200, 4000, 5600; block 200, 0, 600
    assert b.received == {"global": 1000, "update": 4000, "block": 200, "all": 5600}
    assert list(b.received) == ["global", "update", "block", "all"]  # TRAFFIC_KINDS order, then the total
    text = "\n".join(breakdown_markdown(b))
    assert "| update | 4.0 | 71.4% |" in text and "| block | 0.2 | 3.6% |" in text and "| all | 5.6 | 100.0% |" in text


def test_the_coordinators_stages_run_from_one_global_model_to_the_next():
    events = []
    for round_no, start, stages in (
        (1, 100.0, (2.0, 1.0, 0.5, 0.25)),  # updates, votes, decide, block
        (2, 104.0, (4.0, 1.0, 0.5, 0.25)),
        (3, 110.0, (1.0, 1.0, 0.5, 0.25)),  # the last round: no next global model, left out
    ):
        ts = start
        events.append((ts, round_no, "global-out", {}))
        for kind, seconds in zip(("updates-in", "votes-in", "decided", "block"), stages):
            ts += seconds
            events.append((ts, round_no, kind, {}))
    events.append((106.0, 2, "global-out", {}))  # a resumed round published its model again: the last counts
    timeline = coordinator_timeline(events)
    # round 1: 100 -> 102 -> 103 -> 103.5 -> 103.75, next model at 106 (between 2.25); round 2 from 106:
    # updates 2 (108 - 106), votes 1, decide 0.5, block 0.25, between 110 - 109.75 = 0.25
    assert timeline is not None and timeline.rounds == 2
    assert timeline.median_s == pytest.approx(
        {"updates": 2.0, "votes": 1.0, "decide": 0.5, "block": 0.25, "between": 1.25}
    )
    assert timeline.median_round_s == pytest.approx(5.0)  # 6.0 and 4.0
    assert timeline.share["between"] == pytest.approx(2.5 / 10.0)
    assert sum(timeline.share.values()) == pytest.approx(1.0)
    assert "| votes | 1.000 | 20.0% |" in timeline_markdown(timeline)
    overlapped = [e for e in events if not (e[1] == 2 and e[2] == "block")] + [(111.0, 2, "block", {})]
    pipelined = coordinator_timeline(overlapped)  # round 2's block came after round 3's model: not its stage
    assert pipelined is not None and pipelined.rounds == 2
    assert pipelined.median_s["block"] == pytest.approx(0.125)  # round 1's 0.25 and round 2's 0 off the path
    assert pipelined.median_s["between"] == pytest.approx((2.25 + 0.5) / 2)  # round 2: 109.5 -> 110
    assert pipelined.median_round_s == pytest.approx(5.0)
    unsupervised = [e for e in events if e[2] != "votes-in"]
    assert "votes" not in coordinator_timeline(unsupervised).median_s
    assert coordinator_timeline([e for e in events if e[1] == 3]) is None  # no whole round followed by another
