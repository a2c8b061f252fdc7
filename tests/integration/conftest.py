"""Integration fixtures: a real mosquitto broker on a free loopback port."""

import pytest

from bpcv.mqtt import BrokerAddress
from broker.runner import free_port, mosquitto_binary, start_broker_process


@pytest.fixture()
def mosquitto(tmp_path):
    """A real mosquitto with the project's config. Missing mosquitto is a failure, not a skip:
    CI installs it (apt-get install mosquitto) and these tests exist to run against it."""
    assert mosquitto_binary(), "mosquitto is not installed: apt-get install mosquitto"
    port = free_port()
    proc = start_broker_process("mosquitto", "127.0.0.1", port, tmp_path / "mosquitto")
    yield BrokerAddress("127.0.0.1", port)
    proc.terminate()
    proc.wait(timeout=10)
