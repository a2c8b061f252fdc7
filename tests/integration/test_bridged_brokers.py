"""Past one broker (#17): a site mosquitto bridged over TLS to a central, locked-down one with mosquitto's
own bridge. The central broker is `bpcv demo --broker secure` (TLS, a client certificate per node, ACLs),
with `--bridge site-1`: a certificate for the bridge, which the ACL lets carry the whole base topic. The
coordinator, the requester and one agent are on the central broker; three agents, in their own OS
process, reach only the site broker (plain, loopback: a site's LAN). The task runs across the bridge:
the site's agents train, vote and are ranked and aggregated, and their replicas end on the same head
as the central side's."""

import getpass
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpcv.mqtt import BrokerAddress
from broker.runner import free_port, render_bridge_conf, start_broker_process
from broker.secure import client_tls_files, listener_of, render_acl
from tests.integration.test_live_task import finish, verify_cli

pytestmark = pytest.mark.integration
SITE = ("node-02", "node-03", "node-04")  # the demo's last active agents: --external 3
BRIDGE = "site-1"


def test_the_bridge_lines_and_the_central_acl(tmp_path):
    """Not live: what the site broker's config and the central ACL say, with and without TLS."""
    central = BrokerAddress("central.example", 8883)
    plain = render_bridge_conf("site-1", central)
    assert "address central.example:8883" in plain and "topic bpcv/v1/# both 1" in plain
    assert "bridge_cafile" not in plain
    tls = client_tls_files(tmp_path, "site-1")
    Path(tls.key).parent.mkdir()
    Path(tls.key).write_text("")
    secure = render_bridge_conf("site-1", BrokerAddress("central.example", 8883, tls))
    assert f"bridge_cafile {tls.ca}\nbridge_certfile {tls.cert}\nbridge_keyfile {tls.key}" in secure
    assert "bridge_insecure false" in secure and f"\nuser {getpass.getuser()}\n" in secure  # owns the key
    assert "user site-1\ntopic readwrite bpcv/v1/#" in render_acl(bridges=("site-1",))
    assert "readwrite" not in render_acl(coordinators=("coordinator",), requesters=("requester",))


def site_config(central: Path, site_url: str, to: Path) -> None:
    """A site agent's config: the site broker's plain URL instead of the central TLS one, no TLS files."""
    text = re.sub(r'(?m)^broker = ".*"$', f'broker = "{site_url}"', central.read_text())
    to.write_text(re.sub(r'(?m)^(tls_ca|tls_cert|tls_key) = ".*"$', r'\1 = ""', text))


def test_a_task_runs_across_a_site_broker_bridged_over_tls_to_the_central_one(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bpcv_app.cli", "demo", "--broker", "secure", "--bridge", BRIDGE, "--out", str(out),
           "--agents", "4", "--standby", "0", "--external", "3", "--processes", "1", "--rounds", "2",
           "--min-nodes", "2", "--dp", "off", "--epochs", "1", "--update-timeout", "120", "--vote-timeout", "30"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 90
    while not all((out / "configs" / f"{n}.toml").exists() for n in SITE) and time.monotonic() < deadline:
        time.sleep(0.2)
    broker_dir = out / "broker"
    _host, central_port = listener_of(broker_dir / "mosquitto.conf")
    # the server certificate names 127.0.0.1 and localhost; mosquitto's bridge checks the host name
    central = BrokerAddress("localhost", central_port, client_tls_files(broker_dir, BRIDGE))
    port = free_port()
    site = start_broker_process("mosquitto", "127.0.0.1", port, tmp_path / "site", bridge_to=central)
    site_url = BrokerAddress("127.0.0.1", port).url()
    configs = []
    for node in SITE:  # the site's agents know only the site broker
        site_config(out / "configs" / f"{node}.toml", site_url, tmp_path / f"{node}.toml")
        configs += ["--config", str(tmp_path / f"{node}.toml")]
    with open(tmp_path / "site-agents.log", "wb") as log:
        agents = subprocess.Popen([sys.executable, "-m", "bpcv_app.cli", "agent", *configs], stdout=log, stderr=log)
    try:
        text = finish(proc)
    finally:
        agents.send_signal(signal.SIGTERM)
        agents.wait(timeout=30)
        site.terminate()
        site.wait(timeout=10)
    site_log = (tmp_path / "site" / "broker-mosquitto.log").read_text(errors="replace")[-2000:]
    assert proc.returncode == 0, text + site_log
    assert "mqtts://" in (out / "configs" / "node-01.toml").read_text()  # the central side is TLS
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2], text
    # the site's updates and votes crossed the bridge: every site node was ranked by its peers' votes, and
    # every round's global model was built from site updates (the paper's rule leaves out the lowest-ranked)
    log = (tmp_path / "site-agents.log").read_text()[-3000:]
    assert set(SITE) <= {n for r in summary["rounds"] for n in r["ranking"]}, (summary["rounds"], log)
    assert all(set(SITE) & set(r["aggregated"]) for r in summary["rounds"]), (summary["rounds"], log)
    replicas = [*summary["replicas"], *(str(out / "nodes" / n / "chain") for n in SITE)]
    assert len({verify_cli(path) for path in replicas}) == 1
