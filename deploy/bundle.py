"""``bpcv deploy bundle``: everything one edge device needs to run its agent as a service.

A bundle folder holds the node's config (paths as they will be on the device), its key (0600), the
consortium genesis, its TLS credentials for an mqtts:// broker, the project as a wheel, a systemd
unit, and ``install.sh``. The same content also comes as two first-boot files: a cloud-init
``user-data`` and a Raspberry Pi Imager style ``firstrun.sh``, each self-contained, so writing an OS
image plus one of them to an SD card yields a running agent.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

from bpcv.config import AgentConfig, broker_address, write_config
from bpcv.errors import ConfigError
from bpcv.identity import Identity

TEMPLATES = Path(__file__).parent / "templates"
ETC, STATE, BUNDLE_ON_DEVICE = "/etc/bpcv", "/var/lib/bpcv", "/opt/bpcv-bundle"
SECRET_FILES = ("node.key", "tls/client.key")


def device_config(config: AgentConfig, data_path: str | None) -> AgentConfig:
    """The agent's config as it will be on the device: files under /etc/bpcv, the chain under /var/lib/bpcv."""
    tls = bool(config.tls_ca)
    return replace(
        config,
        key="node.key",
        genesis="genesis.bin",
        chain_dir=f"{STATE}/chain",
        tls_ca="tls/ca.crt" if tls else "",
        tls_cert="tls/client.crt" if tls else "",
        tls_key="tls/client.key" if tls else "",
        data_path=config.data_path if data_path is None else data_path,
        join_delay_s=0.0,
    )


def render_unit(node: str, data_path: str) -> str:
    data_line = f"ReadOnlyPaths={data_path}\n" if data_path else ""
    return (TEMPLATES / "bpcv-agent.service").read_text().format(node=node, data_paths=data_line)


def project_wheel(out: Path, wheel: Path | None = None) -> Path:
    """The project's wheel in ``out``: ``wheel`` copied, or built from the source tree this runs from."""
    out.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        if not wheel.is_file() or not wheel.name.startswith("bpcv_fl-") or wheel.suffix != ".whl":
            raise ConfigError(f"--wheel {wheel}: not a bpcv_fl-*.whl file")
        return Path(shutil.copy2(wheel, out / wheel.name))
    source = Path(__file__).resolve().parents[1]
    if not (source / "pyproject.toml").is_file():
        raise ConfigError("no source tree to build the wheel from: pass --wheel bpcv_fl-*.whl")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    built = sorted(out.glob("bpcv_fl-*.whl"))
    if done.returncode != 0 or not built:
        raise ConfigError(f"building the project wheel failed: {done.stderr.strip()[-2000:]}")
    return built[-1]


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def make_bundle(config: AgentConfig, out: Path, data_path: str | None = None, wheel: Path | None = None) -> list[Path]:
    """Write the bundle for the agent ``config`` (as used on this machine) into ``out``; return its files."""
    identity = Identity.load(Path(config.key))
    node = identity.node_id
    broker_address(config)  # a clear error for a bad URL or missing TLS files, before anything is written
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; bundles are written to a new folder")
    out.mkdir(parents=True, exist_ok=True)
    on_device = device_config(config, data_path)
    write_config(on_device, out / "agent.toml")
    (out / "NODE").write_text(node + "\n")
    _write_secret(out / "node.key", Path(config.key).read_bytes())
    shutil.copy2(config.genesis, out / "genesis.bin")
    if config.tls_ca:
        (out / "tls").mkdir()
        shutil.copy2(config.tls_ca, out / "tls" / "ca.crt")
        shutil.copy2(config.tls_cert, out / "tls" / "client.crt")
        _write_secret(out / "tls" / "client.key", Path(config.tls_key).read_bytes())
    (out / "bpcv-agent.service").write_text(render_unit(node, on_device.data_path))
    shutil.copy2(TEMPLATES / "install.sh", out / "install.sh")
    (out / "install.sh").chmod(0o755)
    project_wheel(out / "wheels", wheel)
    payload = bundle_files(out)
    (out / "MANIFEST.sha256").write_text(
        "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, (data, _mode) in payload.items())
    )
    (out / "first-boot").mkdir()
    (out / "first-boot" / "user-data").write_text(cloud_init_user_data(node, payload))
    firstrun = out / "first-boot" / "firstrun.sh"
    firstrun.write_text(firstrun_script(node, payload))
    firstrun.chmod(0o755)
    for secret in (out / "first-boot" / "user-data", firstrun):
        secret.chmod(secret.stat().st_mode & ~(stat.S_IRWXG | stat.S_IRWXO))  # they embed the key
    return sorted(p for p in out.rglob("*") if p.is_file())


def bundle_files(out: Path) -> dict[str, tuple[bytes, int]]:
    """The bundle's files (relative name -> bytes, mode), the first-boot files excluded."""
    files = {}
    for path in sorted(out.rglob("*")):
        name = path.relative_to(out).as_posix()
        if path.is_file() and not name.startswith("first-boot/") and name != "MANIFEST.sha256":
            files[name] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return files


def cloud_init_user_data(node: str, files: dict[str, tuple[bytes, int]]) -> str:
    """A #cloud-config that writes the bundle to /opt/bpcv-bundle and runs its installer on first boot."""
    lines = [
        "#cloud-config",
        f"# BPCV-FL edge agent {node}, written by `bpcv deploy bundle`. It holds the node's private key:",
        "# keep it as secret as the key itself. On first boot it installs and starts bpcv-agent.service.",
        "package_update: true",
        "packages:",
        "  - python3-venv",
        "write_files:",
    ]
    for name, (data, mode) in files.items():
        lines += [
            f"  - path: {BUNDLE_ON_DEVICE}/{name}",
            "    encoding: b64",
            f"    permissions: '0{mode:o}'",
            "    owner: root:root",
            f"    content: {base64.b64encode(data).decode()}",
        ]
    lines += ["runcmd:", f"  - [sh, {BUNDLE_ON_DEVICE}/install.sh]", ""]
    return "\n".join(lines)


def firstrun_script(node: str, files: dict[str, tuple[bytes, int]]) -> str:
    """A Raspberry Pi Imager style first-run script: the bundle as an embedded tar, unpacked and installed
    once, then the script removes itself from the kernel command line (as Imager's own firstrun.sh does)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    archive = base64.b64encode(buffer.getvalue()).decode()
    wrapped = "\n".join(archive[i : i + 76] for i in range(0, len(archive), 76))
    return f"""#!/bin/sh
# BPCV-FL edge agent {node}: first-boot installer, written by `bpcv deploy bundle`. It holds the node's
# private key. Copy it to the SD card's boot partition and append to cmdline.txt (one line):
#   systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target
# (Raspberry Pi OS before bookworm: /boot/firstrun.sh). Or run it once by hand: sudo sh firstrun.sh
set -eu
mkdir -p {BUNDLE_ON_DEVICE}
chmod 0700 {BUNDLE_ON_DEVICE}
base64 -d > {BUNDLE_ON_DEVICE}/bundle.tar.gz <<'BPCV_BUNDLE'
{wrapped}
BPCV_BUNDLE
tar -xzf {BUNDLE_ON_DEVICE}/bundle.tar.gz -C {BUNDLE_ON_DEVICE} --no-same-owner
rm -f {BUNDLE_ON_DEVICE}/bundle.tar.gz
sh {BUNDLE_ON_DEVICE}/install.sh
for boot in /boot/firmware /boot; do
  if [ -f "$boot/cmdline.txt" ]; then sed -i 's| systemd.run.*||g' "$boot/cmdline.txt"; fi
  rm -f "$boot/firstrun.sh"
done
exit 0
"""
