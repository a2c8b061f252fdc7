"""The demo's task from its options: MNIST defaults, a data folder's task file, and the command line
winning over both (the options parsed by the real ``bpcv demo`` parser)."""

import argparse
from dataclasses import replace

import pytest

from bpcv.errors import ConfigError
from bpcv_app.demo import demo_task
from bpcv_app.demo_setup import DemoOptions, add_demo_arguments


def options(tmp_path, *argv: str) -> DemoOptions:
    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    return DemoOptions.from_args(parser.parse_args(["--out", str(tmp_path / "run"), *argv]))


def test_mnist_defaults_and_the_command_line_over_them(tmp_path):
    task = demo_task(options(tmp_path))
    assert (task.dataset, task.model, task.rounds, task.local_epochs, task.batch_size, task.learning_rate) == (
        "mnist", "wavelet:2,4,7", 10, 1, 512, 2.0
    )  # fmt: skip
    assert (options(tmp_path).dp, options(tmp_path).epsilon) == ("laplace", 10.0)  # private by default
    assert (task.nodes, task.min_nodes) == (10, 5)  # 12 agents, 2 standby
    task = demo_task(
        options(tmp_path, "--batch", "64", "--lr", "4", "--epochs", "2", "--rounds", "4", "--model", "mlp:8")
    )
    assert (task.batch_size, task.learning_rate, task.local_epochs, task.rounds, task.model) == (64, 4.0, 2, 4, "mlp:8")
    assert (demo_task(options(tmp_path)).lr_decay, demo_task(options(tmp_path)).time_limit_s) == (1.0, 3600.0)
    task = demo_task(options(tmp_path, "--lr-decay", "0.9", "--time-limit", "7200"))
    assert (task.lr_decay, task.time_limit_s) == (0.9, 7200.0)


def test_a_data_folder_gives_its_task_and_one_agent_per_device_file(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in (1, 2, 3):
        (folder / f"node-0{i}.csv").write_text("a,y\n1,2\n")
    (folder / "task.toml").write_text(
        'dataset = "local"\ncategory = "regression"\nmodel = "mlp:8"\nrounds = 7\nbatch_size = 16\n'
        'learning_rate = 0.05\n\n[data]\nkind = "tabular"\ncategory = "regression"\nfeatures = ["a"]\nlabel = "y"\n'
    )
    o = options(tmp_path, "--data", str(folder))
    assert (o.agents, o.standby, o.min_nodes) == (3, 0, 3)  # every device's data counts by default
    task = demo_task(o)
    assert (task.dataset, task.rounds, task.batch_size, task.learning_rate, task.nodes) == ("local", 7, 16, 0.05, 3)
    assert task.schema.features == ("a",)
    assert demo_task(options(tmp_path, "--data", str(folder), "--lr", "0.5")).learning_rate == 0.5
    with pytest.raises(ConfigError, match="holds 3 device files"):
        options(tmp_path, "--data", str(folder), "--agents", "4")


def test_cifar10_from_a_data_path_reaches_the_task_agents_and_coordinator(tmp_path):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    tarball.write_bytes(b"")  # the demo only checks it is there; the agents and coordinator read it
    o = options(tmp_path, "--dataset", "cifar10", "--data-path", str(tarball), "--agents", "4", "--standby", "1")
    task = demo_task(o)
    assert (task.dataset, task.model, task.batch_size, task.learning_rate) == ("cifar10", "wavelet:2,4,8", 512, 2.0)
    assert task.task_id.startswith("cifar10-") and o.data_path == str(tarball.resolve())
    assert (
        demo_task(options(tmp_path, "--dataset", "cifar10", "--data-path", str(tarball), "--model", "cnn:16,32")).model
        == "cnn:16,32"
    )
    from bpcv.config import AgentConfig, CoordinatorConfig, load_config
    from bpcv_app.demo_setup import Demo

    demo = Demo(o)
    demo.out.mkdir(parents=True)
    (demo.out / "logs").mkdir()
    demo.opts = replace(o, broker="mqtt://127.0.0.1:1")  # an external broker: setup starts no process
    nodes, *_ = demo.setup()
    agent = load_config(AgentConfig, nodes[0].config_path)
    coordinator = load_config(CoordinatorConfig, demo.out / "configs" / "coordinator.toml")
    assert (agent.dataset, agent.data_path, coordinator.data_path) == ("cifar10", o.data_path, o.data_path)
    assert demo_task(options(tmp_path)).dataset == "mnist"


def test_cifar10_needs_a_data_path_and_excludes_local_data(tmp_path):
    with pytest.raises(ConfigError, match="cifar10 needs --data-path"):
        options(tmp_path, "--dataset", "cifar10")
    with pytest.raises(ConfigError, match="not found"):
        options(tmp_path, "--dataset", "cifar10", "--data-path", str(tmp_path / "absent.tar.gz"))
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ConfigError, match="--data .* excludes --dataset"):
        options(tmp_path, "--data", str(folder), "--dataset", "cifar10", "--data-path", str(folder))
