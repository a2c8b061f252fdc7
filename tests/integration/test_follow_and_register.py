"""`bpcv chain follow` and `bpcv chain register` as separate processes over a real mosquitto: the
follower verifies and appends live blocks, refuses a forged one without stopping, takes a
registration block the admin publishes, and keeps a side block when a better rival comes first."""

import subprocess
import sys
import time

import pytest

from bpcv.identity import Identity
from bpcv.mqtt import Bus
from bpcv.topics import Topics
from ledger.inspect import verify_replica
from ledger.replica import Replica
from tests.helpers import honest_scores, round_block

pytestmark = pytest.mark.integration


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bpcv_app.cli", *args]


def test_follower_appends_live_blocks_and_refuses_a_forgery(consortium, mosquitto):
    c, tmp = consortium
    admin_key = tmp / "admin.key"
    c.admin.save(admin_key)
    follower = subprocess.Popen(
        cli("chain", "follow", str(tmp / "follower"), "--genesis", str(tmp / "genesis.bin"),
            "--broker", mosquitto.url(), "--seconds", "12"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(4)  # the follower connects and subscribes
    scores = honest_scores(list(c.agents), bad="node-03")
    g = Replica.open(None, c.genesis.raw).head_hash
    stand_in = round_block(c, 1, g, 1, scores, True, rank=1)
    winner = round_block(c, 1, g, 1, scores, True, rank=0)
    forged = round_block(c, 2, winner.hash, 2, scores, False, proposer="node-03")  # not the PoQ winner
    bus = Bus("publisher", mosquitto, lambda _t, _p: None)
    bus.connect()
    topic = Topics().block("main")
    for block in (winner, stand_in, forged):
        bus.publish(topic, block.raw)
    bus.close()
    newcomer = Identity.generate("node-09")
    admin_replica = tmp / "admin-chain"
    seed = Replica.open(admin_replica, c.genesis.raw)
    seed.append(winner.raw)
    seed.close()
    registered = subprocess.run(
        cli("chain", "register", str(admin_replica), "--genesis", str(tmp / "genesis.bin"), "--admin-key",
            str(admin_key), "--node", "node-09", "--public-key", newcomer.public_key.hex(),
            "--broker", mosquitto.url()),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert "'head': 2" in out and "'side': 1" in out and "'invalid': 1" in out, out + err
    assert "is not at" in err or "but that place is" in err, err  # the forgery's reason is logged
    report = verify_replica(tmp / "follower")
    assert report.height == 2 and report.head_hash == verify_replica(admin_replica).head_hash
    with Replica.open(tmp / "follower").store as store:
        assert store.get_side(stand_in.hash) == stand_in.raw
