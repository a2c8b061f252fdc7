"""The locked-down broker (`bpcv broker init`) against a real mosquitto: TLS with a client certificate
from the consortium CA, ACLs keyed on the certificate's CN (issue #5, must-show 1), and a live task
run through it end to end."""

import datetime as dt
import json
import subprocess
import sys
import time

import pytest

from bpcv.mqtt import BrokerAddress, BrokerUnavailable, Bus, TlsFiles
from broker.credentials import issue, load_ca, make_ca
from broker.runner import free_port, mosquitto_binary, start_broker_process
from broker.secure import Roster, init_broker
from coordinator.timeseries import TimeSeries

pytestmark = pytest.mark.integration


@pytest.fixture()
def secure_broker(tmp_path):
    assert mosquitto_binary(), "mosquitto is not installed: apt-get install mosquitto"
    folder, port = tmp_path / "broker", free_port()
    init_broker(folder, Roster(("node-01", "node-02")), port=port)
    proc = start_broker_process("secure", "127.0.0.1", port, folder)
    yield folder, port
    proc.terminate()
    proc.wait(timeout=10)


def client(folder, port, node, cert=None, key=None, ca=None, on_message=lambda t, p: None, subscriptions=()):
    tls = TlsFiles(
        str(ca or folder / "ca.crt"),
        str(cert or folder / "clients" / f"{node}.crt") if cert is not False else "",
        str(key or folder / "clients" / f"{node}.key") if cert is not False else "",
    )
    return Bus(node, BrokerAddress("127.0.0.1", port, tls), on_message, subscriptions)


def refused(bus: Bus) -> bool:
    try:
        bus.connect(timeout=3)
    except BrokerUnavailable:
        return True
    bus.close()
    return False


def test_clients_without_a_valid_consortium_certificate_are_refused(secure_broker, tmp_path):
    folder, port = secure_broker
    assert not refused(client(folder, port, "node-01"))  # the control: a member's own certificate works
    assert refused(client(folder, port, "anonymous", cert=False))  # TLS, but no client certificate
    assert refused(Bus("plain", BrokerAddress("127.0.0.1", port), lambda t, p: None))  # no TLS at all
    rogue_ca = make_ca("rogue CA")
    rogue = issue(rogue_ca, "node-01")  # right name, wrong CA
    cert, key = rogue.write(tmp_path / "rogue", "node-01")
    assert refused(client(folder, port, "node-01", cert=cert, key=key))
    ca = load_ca(folder)
    expired = issue(ca, "node-01", days=1, not_before=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10))
    cert, key = expired.write(tmp_path / "expired", "node-01")
    assert refused(client(folder, port, "node-01", cert=cert, key=key))


def test_a_node_can_publish_only_on_its_own_topics(secure_broker):
    folder, port = secure_broker
    got: list[str] = []
    watcher = client(folder, port, "coordinator", on_message=lambda t, p: got.append(t), subscriptions=["bpcv/v1/#"])
    watcher.connect()
    node1 = client(folder, port, "node-01")
    node1.connect()
    round_topics = "bpcv/v1/tasks/t1/round/1"
    for topic in (
        f"{round_topics}/update/node-02",  # another node's update: dropped
        f"{round_topics}/vote/node-02",  # another node's vote: dropped
        f"{round_topics}/result",  # the coordinator's topic: dropped
        "bpcv/v1/tasks/t1",  # the requester's topic: dropped
        f"{round_topics}/update/node-01",  # its own: delivered
        f"{round_topics}/vote/node-01",
    ):
        node1.publish(topic, b"payload")
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    node1.close()
    watcher.close()
    assert sorted(t for t in got if "/round/" in t or t.endswith("/t1")) == [
        f"{round_topics}/update/node-01",
        f"{round_topics}/vote/node-01",
    ]


def test_a_live_task_runs_over_the_locked_down_broker(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "bpcv_app.cli", "demo", "--broker", "secure", "--agents", "4", "--rounds", "2",
         "--epochs", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["chain"]["all_valid"] and summary["chain"]["same_head"]
    assert "mqtts://" in (out / "configs" / "node-01.toml").read_text()
    # the broker runner sampled mosquitto and published over TLS with its own certificate (issue #6), and
    # the coordinator could read the broker's $SYS traffic counters through the ACL
    store = TimeSeries(out / "metrics.sqlite", readonly=True)
    broker_samples = store.samples("broker")
    assert len(broker_samples) >= 5
    # mosquitto itself (~10 MiB), not the Python runner beside it (~50 MiB)
    assert all(s["rss_bytes"] < 25 << 20 for s in broker_samples), [s["rss_bytes"] for s in broker_samples]
    assert len(store.broker_bytes("sent")) >= 3 and store.broker_bytes("sent")[-1][1] > 1 << 20
