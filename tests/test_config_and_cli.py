"""Config files and the CLI: clear errors, instant --help, chain verify exit codes on a real replica."""

import subprocess
import sys
import time

import lmdb
import pytest

from bpcv.config import AgentConfig, load_config, write_config
from bpcv.errors import ConfigError
from bpcv.task import TaskSpec
from ledger import schema
from ledger.replica import Replica
from tests.helpers import honest_scores, make_consortium, round_block


def test_config_round_trip_and_relative_paths(tmp_path):
    cfg = AgentConfig(key="k.key", genesis="g.bin", chain_dir="chain", shard=3, val_fraction=0.2)
    write_config(cfg, tmp_path / "a.toml")
    loaded = load_config(AgentConfig, tmp_path / "a.toml")
    assert loaded.shard == 3 and loaded.key == str(tmp_path / "k.key")


@pytest.mark.parametrize(
    "text,message",
    [
        ('key="k"\ngenesis="g"\nchain_dir="c"\nshard="three"', "shard must be int"),
        ('key="k"\ngenesis="g"\nchain_dir="c"\ncolour="red"', "unknown key"),
        ('key="k"\ngenesis="g"', "missing key"),
        ('key = = "k"', "not valid TOML"),
    ],
)
def test_bad_configs_name_what_is_wrong(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(AgentConfig, tmp_path / "bad.toml")


def test_bad_task_fields_are_named():
    with pytest.raises(ConfigError, match="rounds"):
        TaskSpec.from_body({"task_id": "t", "coordinator": "c", "rounds": 0})
    with pytest.raises(ConfigError, match="unknown field"):
        TaskSpec.from_body({"task_id": "t", "coordinator": "c", "colour": 1})


def test_a_task_names_how_updates_travel_and_a_default_task_travels_as_before():
    base = {"task_id": "t", "coordinator": "c"}
    assert "update_encoding" not in TaskSpec.from_body(base).to_body()  # float32: the body is unchanged
    spec = TaskSpec.from_body({**base, "update_encoding": "int8+deflate"})
    assert TaskSpec.from_body(spec.to_body()).update_encoding == "int8+deflate"
    with pytest.raises(ConfigError, match="update_encoding: model encoding must be one of"):
        TaskSpec.from_body({**base, "update_encoding": "int4"})
    # lossy encodings would perturb fixed layers, which agents cache (found live: DP training then failed)
    assert TaskSpec.from_body({**base, "model": "wavelet:2,4,7", "update_encoding": "float32+deflate"})
    with pytest.raises(ConfigError, match="would change the model's fixed layers"):
        TaskSpec.from_body({**base, "model": "wavelet:2,4,7", "update_encoding": "int8"})


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bpcv_app.cli", *args], capture_output=True, text=True, timeout=60)


def test_help_does_not_import_tensorflow():
    code = "import sys; from bpcv_app.cli import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
    for sub in (
        ["demo"],
        ["broker", "run"],
        ["coordinator"],
        ["agent"],
        ["request"],
        ["keys", "new"],
        ["chain", "show"],
        ["chain", "verify"],
    ):
        assert run_cli(*sub, "--help").returncode == 0


def test_chain_verify_and_show_on_a_real_replica_then_tampered(tmp_path):
    c = make_consortium()
    path = tmp_path / "chain"
    replica = Replica.open(path, c.genesis.raw)
    for r in (1, 2, 3):
        replica.append(round_block(c, r, replica.head_hash, r, honest_scores(list(c.agents)), r == 1).raw)
    replica.close()
    ok = run_cli("chain", "verify", str(path))
    assert ok.returncode == 0 and "height 3" in ok.stdout
    shown = run_cli("chain", "show", str(path))
    assert shown.returncode == 0 and "round 3" in shown.stdout and "vote by node-01" in shown.stdout
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        raw = bytearray(txn.get(schema.block_key(3)))
        raw[len(raw) // 2] ^= 0xFF
        txn.put(schema.block_key(3), bytes(raw))
    env.close()
    bad = run_cli("chain", "verify", str(path))
    assert bad.returncode == 2 and "height 3" in bad.stderr
    assert run_cli("chain", "verify", str(tmp_path / "nothing")).returncode == 2


def test_chain_audit_reports_votes_rankings_and_refuses_a_tampered_replica(tmp_path):
    c = make_consortium()
    path = tmp_path / "chain"
    replica = Replica.open(path, c.genesis.raw)
    for r in (1, 2):
        scores = honest_scores(list(c.agents), bad="node-04")
        replica.append(round_block(c, r, replica.head_hash, r, scores, r == 1).raw)
    replica.close()
    done = run_cli("chain", "audit", str(path), "--task", "t1")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "round 1 (block 1, proposer node-01)" in text and "round 2 (block 2" in text
    assert "eliminated: node-04 (lowest quality)" in text
    assert "0.0700" in text  # every voter scored node-04 at 0.1 - 0.01 * 3 (tests.helpers.honest_scores)
    assert run_cli("chain", "audit", str(path), "--task", "nope").stdout.startswith("task nope: nothing recorded")
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        raw = bytearray(txn.get(schema.block_key(1)))
        raw[-5] ^= 0x01
        txn.put(schema.block_key(1), bytes(raw))
    env.close()
    refused = run_cli("chain", "audit", str(path), "--task", "t1")
    assert refused.returncode == 2 and "does not verify" in refused.stderr


def test_keys_new_refuses_to_overwrite(tmp_path):
    key = tmp_path / "n.key"
    first = run_cli("keys", "new", "node-9", "--out", str(key))
    assert first.returncode == 0 and first.stdout.startswith("node-9 ")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    again = run_cli("keys", "new", "node-9", "--out", str(key))
    assert again.returncode == 2 and "refusing" in again.stderr


@pytest.mark.parametrize("kind", ["--embedded", "--mosquitto"])
def test_broker_run_serves_from_any_folder(tmp_path, kind):
    from bpcv.mqtt import BrokerAddress, Bus
    from broker.runner import free_port, wait_for_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bpcv_app.cli", "broker", "run", kind, "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port)
        got = []
        bus = Bus("probe", BrokerAddress("127.0.0.1", port), lambda t, p: got.append(p), ["probe/#"])
        bus.connect()
        assert bus.publish("probe/x", b"hello")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b"hello"]
        bus.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
