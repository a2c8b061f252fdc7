"""Issue #7, for real: a device bundle installed into a fresh Debian root (debootstrap bookworm, minbase
plus python3, python3-venv and systemd: what Raspberry Pi OS has) by its first-boot script; the
installed unit verified by that root's own systemd-analyze; the installed agent started as its unit
says (user bpcv, /var/lib/bpcv) as one of the nodes of a live task on a mosquitto broker of this
machine; then an in-place upgrade that keeps the key and the chain, and a second node's bundle
refused. Also: the dependency set resolves for linux/aarch64 (and TensorFlow has no 32-bit ARM build).

Needs root, debootstrap and the network to the Debian mirror and the package index (CI has both);
takes a few minutes (TensorFlow is installed into the fresh root)."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.timeseries import TimeSeries

pytestmark = pytest.mark.integration
SUITE = "bookworm"


def debian_mirror() -> str:
    """The mirror this machine's apt uses (it is reachable from here), else Debian's."""
    if os.environ.get("BPCV_DEBIAN_MIRROR"):
        return os.environ["BPCV_DEBIAN_MIRROR"]
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", sources.read_text(), re.M)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def run(cmd: list[str], timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    print("$", " ".join(cmd[:6]), "...\n", done.stdout[-3000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope="module")
def fresh_root(tmp_path_factory):
    assert os.geteuid() == 0, "the install test needs root (chroot, useradd)"
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    assert Path(debootstrap).exists(), "debootstrap missing: ./setup.sh --test installs it"
    root = tmp_path_factory.mktemp("device") / "root"
    started = time.monotonic()
    done = run(
        [debootstrap, "--variant=minbase", "--include=python3,python3-venv,ca-certificates,systemd", SUITE,
         str(root), debian_mirror()],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"debootstrap {SUITE}: {time.monotonic() - started:.0f}s")
    # this machine's network settings go with it, as a device has its own: name servers, and the CA
    # bundle (where a proxy re-signs TLS, this machine trusts its CA; pip in the root must too)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
    mounts = []
    for kind, target in (("proc", "proc"), ("sysfs", "sys")):
        subprocess.run(["mount", "-t", kind, kind, str(root / target)], check=True)
        mounts.append(root / target)
    subprocess.run(["mount", "--bind", "/dev", str(root / "dev")], check=True)
    mounts.append(root / "dev")
    yield root
    for mount in reversed(mounts):
        subprocess.run(["umount", "-l", str(mount)], check=False)
    shutil.rmtree(root, ignore_errors=True)


PASSED_ENV = ("PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_INDEX_URL", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def in_root(root: Path, *cmd: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    env.update({k: v for k, v in os.environ.items() if k.upper() in PASSED_ENV})
    return run(["chroot", str(root), *cmd], timeout=timeout, env=env)


def bundle(config: Path, broker_url: str, out: Path) -> Path:
    done = run(
        [sys.executable, "-m", "bpcv_app.cli", "deploy", "bundle", "--config", str(config), "--broker", broker_url,
         "--out", str(out)],
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def unit_command(root: Path) -> tuple[str, str, str, dict[str, str]]:
    """ExecStart, User, WorkingDirectory and Environment of the installed unit."""
    text = (root / "etc/systemd/system/bpcv-agent.service").read_text()
    field = {k: v for k, v in re.findall(r"^(\w+)=(.*)$", text, re.M)}
    env = dict(item.split("=", 1) for item in field["Environment"].split())
    return field["ExecStart"], field["User"], field["WorkingDirectory"], env


@pytest.mark.soak
def test_bundle_installs_in_a_fresh_root_and_the_agent_completes_rounds(fresh_root, mosquitto, tmp_path):
    root, out = fresh_root, tmp_path / "run"
    demo = subprocess.Popen(
        [sys.executable, "-m", "bpcv_app.cli", "demo", "--broker", mosquitto.url(), "--out", str(out), "--agents", "3",
         "--standby", "0", "--external", "1", "--processes", "2", "--rounds", "3", "--epochs", "1",
         "--min-nodes", "3", "--timeout", "1200"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    agent = None
    try:
        config = out / "configs" / "node-03.toml"
        deadline = time.monotonic() + 120
        while not config.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        b = bundle(config, mosquitto.url(), tmp_path / "bundle-node-03")

        # flash: the Pi Imager style first-run script on the boot partition, as the kernel would run it
        boot = root / "boot/firmware"
        boot.mkdir(parents=True, exist_ok=True)
        shutil.copy(b / "first-boot/firstrun.sh", boot / "firstrun.sh")
        (boot / "cmdline.txt").write_text(
            "console=tty1 root=PARTUUID=x rootwait systemd.run=/boot/firmware/firstrun.sh "
            "systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n"
        )
        started = time.monotonic()
        done = in_root(root, "sh", "/boot/firmware/firstrun.sh")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print(f"first boot install: {time.monotonic() - started:.0f}s")
        assert (boot / "cmdline.txt").read_text() == "console=tty1 root=PARTUUID=x rootwait\n"
        assert not (boot / "firstrun.sh").exists()
        assert (root / "etc/systemd/system/multi-user.target.wants/bpcv-agent.service").is_symlink()
        key = root / "etc/bpcv/node.key"
        assert key.stat().st_mode & 0o777 == 0o600 and key.read_bytes() == (b / "node.key").read_bytes()
        verify = in_root(root, "systemd-analyze", "verify", "/etc/systemd/system/bpcv-agent.service")
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr

        # boot: start the agent exactly as the unit says (no systemd as PID 1 in a chroot)
        exec_start, user, workdir, env = unit_command(root)
        agent = subprocess.Popen(
            ["chroot", f"--userspec={user}:{user}", str(root), "/usr/bin/env", "-i",
             *[f"{k}={v}" for k, v in env.items()], "PATH=/usr/bin:/bin", "sh", "-c",
             f"cd {workdir} && exec {exec_start}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        text, _ = demo.communicate(timeout=1200)
        print(text)
        assert demo.returncode == 0, text
    finally:
        if demo.poll() is None:  # a failed test: the demo and everything it started, not just the demo
            os.killpg(demo.pid, signal.SIGKILL)
        if agent is not None:
            agent.terminate()
            agent_log, _ = agent.communicate(timeout=60)
            print(agent_log[-5000:])
    summary = json.loads((out / "summary.json").read_text())
    device = next(n for n in summary["nodes"] if n["id"] == "node-03")
    # --min-nodes 3: nobody is eliminated. Under DP the three honest updates rank by noise, and the
    # lowest-ranked one is left out of each aggregate, so what the device must show is a valid, ranked
    # update (and votes) in every round, not a place in the aggregate.
    assert device["external"] and device["status"] == "active"
    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3]
    for r in summary["rounds"]:
        assert "node-03" in r["ranking"] and "node-03" not in r["dropped"] and "node-03" not in r["invalid"], r
    # the device's own replica, written by user bpcv under /var/lib/bpcv, ends on the coordinator's head
    coordinator_head = summary["chain"]["heads"]["coordinator"]["head_hash"]
    device_chain = root / "var/lib/bpcv/chain"
    check = run([sys.executable, "-m", "bpcv_app.cli", "chain", "verify", str(device_chain)], timeout=120)
    assert check.returncode == 0 and coordinator_head in check.stdout, check.stdout + check.stderr
    store = TimeSeries(out / "metrics.sqlite", readonly=True)
    samples = store.samples("node-03")
    peak_rss = max(s["rss_bytes"] for s in samples) / 2**20
    busy = sorted(s["cpu_percent"] for s in samples)
    median, p90 = busy[len(busy) // 2], busy[int(0.9 * (len(busy) - 1))]
    print(
        f"installed agent: {len(samples)} samples, peak RSS {peak_rss:.0f} MiB, CPU median {median:.0f}% p90 {p90:.0f}%"
    )
    assert len(samples) >= 10 and 200 < peak_rss < 2048

    # upgrade in place: the installer again, from the bundle left on the device
    key_digest = hashlib.sha256(key.read_bytes()).hexdigest()
    height = check.stdout
    again = in_root(root, "sh", "/opt/bpcv-bundle/install.sh")
    assert again.returncode == 0, again.stderr
    assert hashlib.sha256(key.read_bytes()).hexdigest() == key_digest
    assert (root / "etc/bpcv/agent.toml.previous").is_file()
    after = run([sys.executable, "-m", "bpcv_app.cli", "chain", "verify", str(device_chain)], timeout=120)
    assert after.returncode == 0 and after.stdout == height

    # another node's bundle on this device is refused: the key decides who the device is
    other = bundle(out / "configs" / "node-01.toml", mosquitto.url(), tmp_path / "bundle-node-01")
    shutil.copytree(other, root / "root/bundle-node-01")
    refused = in_root(root, "sh", "/root/bundle-node-01/install.sh")
    assert refused.returncode == 1 and "already runs node node-03" in refused.stderr
    assert hashlib.sha256(key.read_bytes()).hexdigest() == key_digest


def test_dependencies_resolve_for_linux_aarch64_and_not_for_32_bit_arm(tmp_path):
    """uv evaluates the environment markers for the target (pip evaluates them for this machine, and so
    would drop tensorflow-cpu-aws, TensorFlow's aarch64 payload); then `pip download` fetches every pinned
    wheel for linux/aarch64, CPython 3.11."""
    root = Path(__file__).resolve().parents[2]
    uv = Path(sys.executable).parent / "uv"
    pins = tmp_path / "aarch64.txt"
    done = run(
        [str(uv), "pip", "compile", "--python-platform", "aarch64-manylinux_2_28", "--python-version", "3.11",
         "--only-binary", ":all:", "--no-header", "--no-annotate", str(root / "pyproject.toml"), "-o", str(pins)],
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wanted = [line for line in pins.read_text().splitlines() if line and not line.startswith("#")]
    assert {"tensorflow==2.15.1", "tensorflow-cpu-aws==2.15.1", "tensorflow-privacy==0.9.0"} <= set(wanted)
    platform = ["--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:"]
    for tag in ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"):
        platform += ["--platform", tag]
    got = tmp_path / "wheels"
    done = run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *platform, "-r", str(pins), "-d", str(got)])
    assert done.returncode == 0, done.stderr
    wheels = sorted(p.name for p in got.glob("*.whl"))
    assert len(wheels) == len(wanted)
    assert all(w.endswith("none-any.whl") or "aarch64" in w for w in wheels), wheels
    print(f"{len(wheels)} wheels for linux/aarch64, {sum(p.stat().st_size for p in got.iterdir()) / 2**20:.0f} MiB")
    arm32 = run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--platform", "linux_armv7l", "--python-version",
         "3.11", "--implementation", "cp", "--only-binary=:all:", "tensorflow==2.15.1", "-d", str(tmp_path / "arm32")],
        timeout=300,
    )  # fmt: skip
    assert arm32.returncode != 0 and "No matching distribution" in arm32.stderr
