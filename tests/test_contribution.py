"""An update must be a contribution (coordinator/collector.py): the round's global model sent back
untrained, or an update that moves weights the task never trains, is refused as invalid when the task
eliminates; under elimination ``none`` (the baselines as published) both are accepted. And whom the
collector names to be asked again. Through the real coordinator's handler, with signed updates, not
connected to a broker."""

from dataclasses import replace

import numpy as np
import pytest

from bpcv.codec import decode_model, encode_model, model_digest
from bpcv.envelope import seal
from bpcv.topics import Topics
from coordinator.collector import RoundCollector
from tests.helpers import offline_coordinator

SHAPES = [(3, 2), (2,)]
FIXED = [True, False]  # the first tensor is a fixed map (like the wavelet filters), the second is trained
ROSTER = ["node-01", "node-02", "node-03"]
GLOBAL = [np.arange(6, dtype=np.float32).reshape(3, 2) / 7, np.array([0.1, -0.2], np.float32)]


def send(coord, c, node: str, weights, encoding: str = "float32") -> None:
    blob = encode_model(weights, encoding)
    env = seal(c.agents[node], "update", "t1", 1, {"digest": model_digest(blob), "num_samples": 10}, [blob])
    coord.handle(Topics().update("t1", 1, node), env.raw)


def collecting(c, tmp, **task_fields):
    """The offline coordinator collecting round 1 of ``c``'s task changed by ``task_fields``, from GLOBAL."""
    coord = offline_coordinator(c, tmp, ROSTER, SHAPES)
    coord.collector = RoundCollector(replace(c.task, **task_fields), coord.intake, SHAPES)
    coord.collector.fixed = FIXED
    coord.collector.begin_round(1, ROSTER, "", GLOBAL)
    return coord


@pytest.mark.parametrize("policy", ["lowest", "outlier"])
def test_free_riders_and_fixed_map_changes_are_invalid_when_the_task_eliminates(consortium, policy):
    c, tmp = consortium
    coord = collecting(c, tmp, elimination=policy)
    send(coord, c, "node-01", GLOBAL)  # free-ride: the global model back
    send(coord, c, "node-02", [GLOBAL[0] + 1e-3, GLOBAL[1] + 1e-3])  # free-ride-noise, noise on the fixed map too
    send(coord, c, "node-03", [GLOBAL[0].copy(), GLOBAL[1] + np.float32(1e-7)])  # the smallest change counts
    inbox = coord.collector.inbox
    assert inbox.invalid == {"node-01": "no-training", "node-02": "fixed-weights-changed"}
    assert list(inbox.valid) == ["node-03"]
    assert coord.intake.rejected["no-training"] == 1 and coord.intake.rejected["fixed-weights-changed"] == 1
    coord.close()


def test_under_elimination_none_a_well_formed_update_is_never_refused(consortium):
    c, tmp = consortium
    coord = collecting(c, tmp, elimination="none")
    send(coord, c, "node-01", GLOBAL)
    send(coord, c, "node-02", [GLOBAL[0] + 1e-3, GLOBAL[1] + 1e-3])
    assert coord.collector.inbox.invalid == {} and sorted(coord.collector.inbox.valid) == ["node-01", "node-02"]
    coord.close()


def test_free_ride_is_compared_as_the_update_encoding_carries_it(consortium):
    """In an int8 task the free-rider's global model comes back quantised: still the global model, still
    refused; a trained update survives quantisation as a change."""
    c, tmp = consortium
    coord = collecting(c, tmp, elimination="outlier", update_encoding="int8")
    coord.collector.fixed = [False, False]
    send(coord, c, "node-01", GLOBAL, "int8")
    send(coord, c, "node-02", [GLOBAL[0] + 0.05, GLOBAL[1] + 0.05], "int8")
    assert coord.collector.inbox.invalid == {"node-01": "no-training"}
    assert decode_model(encode_model(GLOBAL, "int8"), SHAPES)[0].tolist() != GLOBAL[0].tolist()  # it is lossy
    coord.close()


def test_the_coordinator_asks_again_only_nodes_that_stopped_sending(consortium):
    """While updates keep coming the coordinator does not ask anyone to send again (at N = 200 on two
    cores, asking every 8 s while they were still arriving piled re-sent updates up faster than they were
    read); after a look with none arriving, it asks the nodes still missing, and again while none come."""
    c, tmp = consortium
    coord = collecting(c, tmp, elimination="none")
    collector = coord.collector
    assert collector.stalled("update") == []  # the first look only notes that 3 are missing
    send(coord, c, "node-01", [GLOBAL[0], GLOBAL[1] + 1e-3])
    assert collector.stalled("update") == []  # one came since: still sending
    assert collector.stalled("update") == ["node-02", "node-03"]  # none since the last look
    assert collector.stalled("update") == ["node-02", "node-03"]
    assert collector.stalled("vote") == []  # votes are looked at on their own
    assert collector.stalled("vote") == ["node-01"]
    coord.close()
