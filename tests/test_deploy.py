"""`bpcv deploy bundle` (issue #7): the bundle's files and modes, the systemd unit under
`systemd-analyze verify`, the cloud-init user-data under `cloud-init schema`, the Pi Imager
first-run script, the installer's refusals, and the Ansible playbook's syntax. The installer's real
run, in a fresh Debian root, is tests/integration/test_deploy_install.py."""

import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bpcv.config import AgentConfig, load_config
from bpcv.errors import ConfigError
from bpcv.identity import Identity
from deploy.bundle import make_bundle
from ledger.genesis import make_genesis

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def agent_config(tmp_path):
    admin, node = Identity.generate("admin"), Identity.generate("pi-07")
    genesis = make_genesis(admin, "main", {"admin": (admin.public_key, "admin"), "pi-07": (node.public_key, "agent")})
    node.save(tmp_path / "pi-07.key")
    (tmp_path / "genesis.bin").write_bytes(genesis.raw)
    wheel = tmp_path / "bpcv_fl-0.1.0-py3-none-any.whl"  # stands in for the built wheel: copied, not installed
    wheel.write_bytes(b"PK-not-really-a-wheel")
    config = AgentConfig(
        key=str(tmp_path / "pi-07.key"),
        genesis=str(tmp_path / "genesis.bin"),
        chain_dir=str(tmp_path / "chain"),
        broker="mqtt://192.168.1.10:1883",
        shard=3,
        num_shards=8,
    )
    return config, wheel


def tls_files(tmp_path):
    folder = tmp_path / "tls-src"
    folder.mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (folder / name).write_text(f"-----{name}-----\n")
    return str(folder / "ca.crt"), str(folder / "client.crt"), str(folder / "client.key")


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_bundle_holds_config_key_credentials_unit_installer_and_first_boot_files(agent_config, tmp_path):
    config, wheel = agent_config
    ca, cert, key = tls_files(tmp_path)
    config = AgentConfig(**{**config.__dict__, "broker": "mqtts://broker.lan:8883", "tls_ca": ca})
    config = AgentConfig(**{**config.__dict__, "tls_cert": cert, "tls_key": key})
    out = tmp_path / "bundle"
    make_bundle(config, out, data_path="/srv/sensor-data", wheel=wheel)
    on_device = load_config(AgentConfig, out / "agent.toml")  # relative paths resolve next to the config
    assert on_device.key == str((out / "node.key").resolve()) and on_device.chain_dir == "/var/lib/bpcv/chain"
    assert on_device.tls_key == str((out / "tls" / "client.key").resolve()) and on_device.shard == 3
    assert on_device.data_path == "/srv/sensor-data" and on_device.broker == "mqtts://broker.lan:8883"
    assert (out / "node.key").read_bytes() == Path(config.key).read_bytes() and mode(out / "node.key") == 0o600
    assert mode(out / "tls" / "client.key") == 0o600 and (out / "NODE").read_text() == "pi-07\n"
    unit = (out / "bpcv-agent.service").read_text()
    assert "ReadOnlyPaths=/srv/sensor-data" in unit and "User=bpcv" in unit and "Restart=on-failure" in unit
    for line in (out / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert mode(out / "first-boot" / "user-data") == 0o600 and mode(out / "first-boot" / "firstrun.sh") == 0o700


def test_bundle_refuses_what_would_not_work(agent_config, tmp_path):
    config, wheel = agent_config
    with pytest.raises(ConfigError, match="is TLS: give the consortium CA"):
        make_bundle(AgentConfig(**{**config.__dict__, "broker": "mqtts://b:8883"}), tmp_path / "a", wheel=wheel)
    with pytest.raises(ConfigError, match="broker"):
        make_bundle(AgentConfig(**{**config.__dict__, "broker": "http://b"}), tmp_path / "b", wheel=wheel)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "old").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        make_bundle(config, tmp_path / "c", wheel=wheel)
    with pytest.raises(ConfigError, match="not a bpcv_fl"):
        make_bundle(config, tmp_path / "d", wheel=tmp_path / "pi-07.key")


def fake_root(tmp_path: Path, unit: Path) -> Path:
    """A root for `systemd-analyze verify --root`: the system's unit files, an executable where the unit's
    ExecStart points, and the unit installed."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/bpcv/venv/bin/bpcv"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    return root


def verify_unit(root: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_systemd_analyze_verify_passes_on_the_unit(agent_config, tmp_path):
    assert shutil.which("systemd-analyze"), "systemd-analyze missing: ./setup.sh --test installs it"
    config, wheel = agent_config
    make_bundle(config, tmp_path / "bundle", data_path="/srv/data", wheel=wheel)
    root = fake_root(tmp_path, tmp_path / "bundle" / "bpcv-agent.service")
    done = verify_unit(root, "bpcv-agent.service")
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr
    # the control: verify does see a broken unit (it warns and goes on, so the test reads stderr)
    broken = root / "etc/systemd/system/broken.service"
    broken.write_text(
        (root / "etc/systemd/system/bpcv-agent.service").read_text().replace("Restart=on-failure", "Restart=sometimes")
    )
    assert "Failed to parse service restart specifier" in verify_unit(root, "broken.service").stderr


def test_cloud_init_user_data_passes_the_schema_and_carries_the_bundle(agent_config, tmp_path):
    assert shutil.which("cloud-init"), "cloud-init missing: ./setup.sh --test installs it"
    config, wheel = agent_config
    out = tmp_path / "bundle"
    make_bundle(config, out, wheel=wheel)
    user_data = out / "first-boot" / "user-data"
    done = subprocess.run(["cloud-init", "schema", "--config-file", str(user_data)], capture_output=True, text=True)
    assert done.returncode == 0 and "Valid cloud-config" in done.stdout, done.stdout + done.stderr
    text = user_data.read_text()
    key = re.search(r"path: /opt/bpcv-bundle/node.key\n.*\n    permissions: '0600'\n.*\n    content: (\S+)", text)
    assert key and base64.b64decode(key.group(1)) == Path(config.key).read_bytes()
    assert "runcmd:\n  - [sh, /opt/bpcv-bundle/install.sh]" in text
    broken = tmp_path / "broken-user-data"
    broken.write_text(text.replace("encoding: b64", "encoding: b65", 1))
    assert subprocess.run(["cloud-init", "schema", "--config-file", str(broken)], capture_output=True).returncode != 0


def test_firstrun_script_is_valid_sh_and_unpacks_to_the_bundle(agent_config, tmp_path):
    config, wheel = agent_config
    out = tmp_path / "bundle"
    make_bundle(config, out, wheel=wheel)
    script = (out / "first-boot" / "firstrun.sh").read_text()
    assert subprocess.run(["sh", "-n", str(out / "first-boot" / "firstrun.sh")]).returncode == 0
    archive = script.split("<<'BPCV_BUNDLE'\n", 1)[1].split("\nBPCV_BUNDLE\n", 1)[0]
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(archive))) as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(names["node.key"]).read() == (out / "node.key").read_bytes()
        assert names["node.key"].mode == 0o600 and names["install.sh"].mode == 0o755
    assert set(names) == {
        "NODE",
        "agent.toml",
        "bpcv-agent.service",
        "genesis.bin",
        "install.sh",
        "node.key",
        f"wheels/{wheel.name}",
    }
    assert "sed -i 's| systemd.run.*||g'" in script  # removes itself from cmdline.txt, as Imager's does


@pytest.mark.parametrize(
    ("machine", "long_bit", "message"),
    [("armv7l", "32", "32-bit system (armv7l)"), ("aarch64", "32", "32-bit userland on a 64-bit kernel")],
)
def test_installer_refuses_32_bit_raspberry_pi_os(tmp_path, machine, long_bit, message):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name, output in (("uname", machine), ("getconf", long_bit)):
        (fake_bin / name).write_text(f"#!/bin/sh\necho {output}\n")
        (fake_bin / name).chmod(0o755)
    (tmp_path / "NODE").write_text("pi-07\n")
    shutil.copy(ROOT / "deploy/templates/install.sh", tmp_path / "install.sh")
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", str(tmp_path / "install.sh")], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and message in done.stderr and "64-bit Raspberry Pi OS" in done.stderr


def test_installer_refuses_a_python_tensorflow_does_not_support(tmp_path):
    """Raspberry Pi OS trixie has Python 3.13: the installer names it and says what to do."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("python3.11", "python3.10", "python3"):  # shadow whatever this machine has
        (fake_bin / name).write_text('#!/bin/sh\ncase "$2" in *exit*) exit 1;; *) echo 3.13;; esac\n')
        (fake_bin / name).chmod(0o755)
    (tmp_path / "NODE").write_text("pi-07\n")
    shutil.copy(ROOT / "deploy/templates/install.sh", tmp_path / "install.sh")
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", str(tmp_path / "install.sh")], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "this system's python3 is 3.13" in done.stderr, done.stderr
    assert "BPCV_PYTHON=" in done.stderr and "Legacy, 64-bit" in done.stderr


def test_ansible_playbook_parses():
    playbook = ROOT / "deploy/ansible/site.yml"
    ansible = Path(sys.executable).parent / "ansible-playbook"
    done = subprocess.run(
        [str(ansible), "-i", str(ROOT / "deploy/ansible/inventory.example.ini"), str(playbook), "--syntax-check",
         "-e", "bundles_dir=/tmp"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("data", "dataset", "expected"),
    [("/home/pi/sensors.csv", "", "local"), ("/home/pi/log.parquet", "", "local"), ("/srv/mnist", "", "mnist")],
)
def test_bundle_data_points_the_agent_at_the_devices_own_file(agent_config, tmp_path, data, dataset, expected):
    """``bpcv deploy bundle --data FILE``: the device's config reads its own sensor log (a local-data
    agent) and the service may read that file; a folder keeps the shared dataset's files."""
    config, wheel = agent_config
    from bpcv_app.cli import main

    out = tmp_path / "bundle"
    args = ["deploy", "bundle", "--key", config.key, "--genesis", config.genesis, "--broker", config.broker]
    assert main([*args, "--data", data, "--out", str(out), "--wheel", str(wheel)]) == 0
    on_device = load_config(AgentConfig, out / "agent.toml")
    assert on_device.data_path == data and on_device.dataset == expected
    assert f"ReadOnlyPaths={data}" in (out / "bpcv-agent.service").read_text()
