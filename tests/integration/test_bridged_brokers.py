"""Past one broker: a site mosquitto bridged to a central one with mosquitto's own bridge (#17). The
coordinator, the requester and one agent are on the central broker; three agents, in their own OS
process, only reach the site broker. The task runs across the bridge: the site's agents train, vote
and are ranked and aggregated, and their replicas end on the same head as the central side's."""

import json
import signal
import subprocess
import sys
import time

import pytest

from bpcv.mqtt import BrokerAddress
from broker.runner import free_port, start_broker_process
from tests.integration.test_live_task import demo, finish, verify_cli

pytestmark = pytest.mark.integration
SITE = ("node-02", "node-03", "node-04")  # the demo's last active agents: --external 3


def test_a_task_runs_across_a_site_broker_bridged_to_the_central_one(mosquitto, tmp_path):
    port = free_port()
    site = start_broker_process("mosquitto", "127.0.0.1", port, tmp_path / "site", bridge_to=mosquitto)
    site_url = BrokerAddress("127.0.0.1", port).url()
    out = tmp_path / "run"
    proc = demo(
        out, mosquitto, "--agents", "4", "--standby", "0", "--external", "3", "--processes", "1",
        "--rounds", "2", "--min-nodes", "2", "--dp", "off", "--update-timeout", "120",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not all((out / "configs" / f"{n}.toml").exists() for n in SITE) and time.monotonic() < deadline:
        time.sleep(0.2)
    configs = []
    for node in SITE:  # the site's agents know only the site broker
        config = tmp_path / f"{node}.toml"
        config.write_text((out / "configs" / f"{node}.toml").read_text().replace(mosquitto.url(), site_url))
        configs += ["--config", str(config)]
    with open(tmp_path / "site-agents.log", "wb") as log:
        agents = subprocess.Popen([sys.executable, "-m", "bpcv_app.cli", "agent", *configs], stdout=log, stderr=log)
    try:
        text = finish(proc)
    finally:
        agents.send_signal(signal.SIGTERM)
        agents.wait(timeout=30)
        site.terminate()
        site.wait(timeout=10)
    assert proc.returncode == 0, text
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2], text
    # the site's updates and votes crossed the bridge: every site node was ranked by its peers' votes, and
    # every round's global model was built from site updates (the paper's rule leaves out the lowest-ranked)
    log = (tmp_path / "site-agents.log").read_text()[-3000:]
    assert set(SITE) <= {n for r in summary["rounds"] for n in r["ranking"]}, (summary["rounds"], log)
    assert all(set(SITE) & set(r["aggregated"]) for r in summary["rounds"]), (summary["rounds"], log)
    replicas = [*summary["replicas"], *(str(out / "nodes" / n / "chain") for n in SITE)]
    assert len({verify_cli(path) for path in replicas}) == 1
