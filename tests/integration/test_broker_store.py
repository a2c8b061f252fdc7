"""A damaged broker store (reliability case), against a real mosquitto with the locked-down config:
mosquitto refuses a persistence file that was zeroed or truncated; the runner sets the file aside,
says why and what that loses, and starts the broker empty. An intact store comes back whole (the
control). What a broker store never holds is the chain: it lives in each node's LMDB replica."""

import logging
import time

import pytest

from bpcv.mqtt import BrokerAddress, Bus, TlsFiles
from broker.runner import free_port, mosquitto_binary, persistence_file, start_broker_process
from broker.secure import Roster, init_broker

pytestmark = pytest.mark.integration


def member(folder, port, node, on_message=lambda t, p: None, subscriptions=()):
    tls = TlsFiles(
        str(folder / "ca.crt"), str(folder / "clients" / f"{node}.crt"), str(folder / "clients" / f"{node}.key")
    )
    return Bus(node, BrokerAddress("127.0.0.1", port, tls), on_message, subscriptions)


def retained(folder, port) -> set[str]:
    """The retained topics under bpcv/v1/tasks that a member connecting now is handed."""
    seen: set[str] = set()
    probe = member(folder, port, "node-02", lambda t, p: seen.add(t), ["bpcv/v1/tasks/+"])
    probe.connect()
    time.sleep(1.0)
    probe.close()
    return seen


def restart(proc, folder, port):
    proc.terminate()  # mosquitto saves its store on the way out
    proc.wait(timeout=10)
    return start_broker_process("secure", "127.0.0.1", port, folder)


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_a_damaged_store_is_set_aside_with_a_reason_and_the_broker_starts_empty(tmp_path, caplog, damage):
    assert mosquitto_binary(), "mosquitto is not installed: apt-get install mosquitto"
    folder, port = tmp_path / "broker", free_port()
    init_broker(folder, Roster(("node-01", "node-02"), requesters=("node-01",)), port=port)
    proc = start_broker_process("secure", "127.0.0.1", port, folder)
    try:
        requester = member(folder, port, "node-01")
        requester.connect()
        assert requester.publish("bpcv/v1/tasks/t1", b"a task announcement", retain=True)
        requester.close()
        proc = restart(proc, folder, port)
        assert retained(folder, port) == {"bpcv/v1/tasks/t1"}  # the control: an intact store comes back whole

        proc.terminate()
        proc.wait(timeout=10)
        store = persistence_file(folder / "mosquitto.conf")
        size = store.stat().st_size
        if damage == "zeroed":
            store.write_bytes(bytes(size))
        else:
            store.write_bytes(store.read_bytes()[: size // 2])
        with caplog.at_level(logging.WARNING):
            proc = start_broker_process("secure", "127.0.0.1", port, folder)
        assert "could not read its persistence file" in caplog.text and "Couldn't open database" in caplog.text
        (aside,) = store.parent.glob("mosquitto.db.damaged-*")
        assert aside.stat().st_size in (size, size // 2)  # kept for a post-mortem, as it was
        assert retained(folder, port) == set()  # started empty, and serving members
    finally:
        proc.terminate()
        proc.wait(timeout=10)
