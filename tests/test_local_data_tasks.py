"""A task on the devices' own data, through the real agent's task handler, the real data readers and
the real trainer (TensorFlow builds the requester's model): each bad file or bad model is refused with
ONE log line naming what was wrong, no traceback, nothing stored changes, and the same agent then
answers the next task (the owner fixed the file). The live path over mosquitto is in
tests/integration/test_local_data_live.py."""

import hashlib
import logging
import queue

import pytest

from bpcv.config import AgentConfig
from bpcv.datasources import DataSchema
from bpcv.errors import ConfigError
from bpcv.messages import seal_task
from bpcv.task import TaskSpec
from edge_agent.agent import Agent
from edge_agent.trainer import Trainer

SCHEMA = DataSchema.from_body(
    {
        "kind": "tabular",
        "category": "classification",
        "features": ["a", "b"],
        "label": "state",
        "classes": ["idle", "run"],
    }
)
GOOD = "a,b,state\n" + "".join(f"{i % 7},{i % 5},{'idle' if i % 2 else 'run'}\n" for i in range(80))
BAD_FILES = {
    "malformed": ("a,b,state\n1,2,idle\n3,4,run,extra,cells\n5,6,idle\n", "malformed CSV: "),
    "unclosed quote": ('a,b,state\n1,2,idle\n"3,4,run\n', "malformed CSV: "),
    "misnamed column": (GOOD.replace("a,b,state", "a,B,state", 1), "column 'b' not found; the file has ['a', 'B', 'state']"),
    "strings in a number column": (GOOD.replace("\n3,3,idle", "\n3,three,idle", 1), "column 'b' expects numbers, found 'three' at row 4"),
    "NaN": (GOOD.replace("\n0,", "\nnan,").replace("\n1,", "\nNaN,").replace("\n2,", "\n,"), "have a missing, NaN or Inf value (most in column 'a'"),
    "Inf": (GOOD.replace("\n4,", "\ninf,").replace("\n5,", "\n-inf,").replace("\n6,", "\nInfinity,"), "the task allows at most 5.0% (max_nan_share)"),
    "empty": ("", "empty file"),
    "ten rows": ("a,b,state\n" + "1,2,idle\n" * 10, "10 rows, the task needs at least 50 (min_rows)"),
    "label not in the classes": (GOOD.replace("\n3,3,idle", "\n3,3,fault", 1), "column 'state' has unknown class 'fault' at row 4"),
}  # fmt: skip


def keras_json(*layers: dict, inputs: int = 2) -> str:
    import json

    config = {"name": "m", "layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, inputs]}}]}
    config["layers"] += [{"class_name": cls, "config": cfg} for cls, cfg in layers]
    return json.dumps(
        {"class_name": "Sequential", "config": config, "keras_version": "2.15.0", "backend": "tensorflow"}
    )


SOFTMAX_OUT = ("Dense", {"units": 2, "activation": "softmax"})
GOOD_MODEL = keras_json(("Dense", {"units": 8, "activation": "relu"}), SOFTMAX_OUT)


def local_task(task_id: str, model: str = GOOD_MODEL, schema: DataSchema = SCHEMA) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        coordinator="coordinator",
        dataset="local",
        data=schema.to_body(),
        model=model,
        nodes=3,
        min_nodes=2,
    )


@pytest.fixture()
def agent(consortium):
    c, tmp = consortium
    device_file = tmp / "device.csv"
    config = AgentConfig(
        key=str(tmp / "node-01.key"),
        genesis=str(tmp / "genesis.bin"),
        chain_dir=str(tmp / "chain"),
        dataset="local",
        data_path=str(device_file),
    )
    agent = Agent(config, queue.Queue(), lambda task, shape, classes, privacy: Trainer(task, shape, classes, privacy))
    yield agent, c, device_file
    agent.replica.close()


def post(agent_and_more, task: TaskSpec) -> None:
    agent, c, _ = agent_and_more
    agent.handle(agent.topics.task(task.task_id), seal_task(c.requester, task).raw)


def refusals(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("edge_agent", "bpcv")) and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_device_file_is_refused_in_one_line_then_the_fixed_file_joins_the_next_task(agent, caplog, case):
    text, expected = BAD_FILES[case]
    node, _, device_file = agent
    device_file.write_text(text)
    before = hashlib.sha256(device_file.read_bytes()).hexdigest()
    with caplog.at_level(logging.INFO):
        post(agent, local_task("t-bad"))
    (line,) = refusals(caplog)
    message = line.getMessage()
    assert expected in message and str(device_file) in message, message
    assert "\n" not in message and line.exc_info is None  # one line, no traceback
    assert node.task is None and node.status == "idle" and node.replica.height == 0
    assert hashlib.sha256(device_file.read_bytes()).hexdigest() == before  # the agent never writes the owner's data

    device_file.write_text(GOOD)  # the owner fixes the log; the same process answers the next task
    caplog.clear()
    post(agent, local_task("t-next"))
    assert refusals(caplog) == [] and node.task is not None and node.task.task_id == "t-next"
    assert node.work is not None and node.work.num_samples == 72  # 80 rows, 8 kept for validation


def huge_model() -> str:
    return keras_json(("Dense", {"units": 4096}), ("Dense", {"units": 2048}), SOFTMAX_OUT, inputs=2048)


BAD_MODELS = {
    "a Lambda layer": (
        lambda: keras_json(("Lambda", {"function": ["x", None, None], "function_type": "lambda"}), SOFTMAX_OUT),
        "(Lambda) is refused: its config carries marshalled Python bytecode",
    ),
    "an unknown layer": (
        lambda: keras_json(("MyCustomLayer", {}), SOFTMAX_OUT),
        "'MyCustomLayer' is not on the allow-list",
    ),
    "an oversize model": (huge_model, "the cap is 5,000,000"),
    "a model whose output does not fit the classes": (
        lambda: keras_json(("Dense", {"units": 3, "activation": "softmax"})),
        "does not match",
    ),
    "a model whose input does not fit the schema": (lambda: keras_json(SOFTMAX_OUT, inputs=5), "input shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_a_refused_model_is_one_line_and_the_agent_answers_the_next_task(agent, caplog, case):
    make, expected = BAD_MODELS[case]
    node, _, device_file = agent
    device_file.write_text(GOOD)
    with caplog.at_level(logging.INFO):
        post(agent, local_task("t-bad", model=make()))
    (line,) = refusals(caplog)
    message = line.getMessage()
    assert expected in message and "\n" not in message and line.exc_info is None, message
    assert node.task is None and node.replica.height == 0
    caplog.clear()
    post(agent, local_task("t-next"))
    assert refusals(caplog) == [] and node.task is not None and node.task.task_id == "t-next"


def test_a_schema_the_file_does_not_meet_is_refused_then_a_matching_task_is_answered(agent, caplog):
    node, _, device_file = agent
    device_file.write_text(GOOD)
    regression = DataSchema.from_body(
        {"kind": "tabular", "category": "regression", "features": ["a"], "label": "state"}
    )
    wrong = TaskSpec(
        task_id="t-reg",
        coordinator="coordinator",
        category="regression",
        dataset="local",
        data=regression.to_body(),
        model=keras_json(("Dense", {"units": 1}), inputs=1),
        nodes=3,
        min_nodes=2,
    )
    with caplog.at_level(logging.INFO):
        post(agent, wrong)
    (line,) = refusals(caplog)
    assert "column 'state' expects numbers, found 'run' at row 1" in line.getMessage()
    caplog.clear()
    post(agent, local_task("t-next"))
    assert refusals(caplog) == [] and node.task.task_id == "t-next"


def test_an_agent_without_local_data_ignores_a_local_task_and_vice_versa(consortium, caplog):
    c, tmp = consortium
    mnist_agent = Agent(
        AgentConfig(key=str(tmp / "node-02.key"), genesis=str(tmp / "genesis.bin"), chain_dir=str(tmp / "c2")),
        queue.Queue(),
        lambda *a: None,
    )
    with caplog.at_level(logging.INFO):
        mnist_agent.handle(mnist_agent.topics.task("t1"), seal_task(c.requester, local_task("t1")).raw)
    assert mnist_agent.task is None and "needs local data, this agent has mnist" in caplog.text
    mnist_agent.replica.close()


def test_task_spec_ties_the_local_dataset_to_its_schema():
    with pytest.raises(ConfigError, match='dataset = "local" and a data schema'):
        TaskSpec(task_id="t", coordinator="c", dataset="local").validate()
    with pytest.raises(ConfigError, match='dataset = "local" and a data schema'):
        TaskSpec(task_id="t", coordinator="c", data=SCHEMA.to_body()).validate()
    with pytest.raises(ConfigError, match="the data schema is classification, the task regression"):
        TaskSpec(task_id="t", coordinator="c", category="regression", dataset="local", data=SCHEMA.to_body()).validate()
    with pytest.raises(ConfigError, match="schema: unknown field"):
        TaskSpec.from_body({"task_id": "t", "coordinator": "c", "dataset": "local", "data": {"colour": "red"}})
    task = local_task("t")
    assert TaskSpec.from_body(task.to_body()) == task and task.input_shape() == (2,)
    assert "data" not in TaskSpec(task_id="t", coordinator="c").to_body()  # MNIST tasks travel as they always have


def task_toml(folder, model: str) -> str:
    (folder / "model.json").write_text(model)
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in SCHEMA.to_body().items() if not isinstance(v, dict))
    path = folder / "task.toml"
    path.write_text(f'dataset = "local"\nmodel_file = "model.json"\n\n[data]\n{body}\n')
    return str(path)


def test_data_check_with_a_task_file_reads_the_file_and_builds_the_model_for_it(tmp_path, capsys):
    from bpcv_app.cli import main

    data = tmp_path / "device.csv"
    data.write_text(GOOD)
    assert main(["data", "check", "--task", task_toml(tmp_path, GOOD_MODEL), str(data)]) == 0
    out = capsys.readouterr().out
    assert "80 rows read" in out and "train 72 / validation 8" in out and "fits: 42 parameters" in out
    # the same file, a model built for 3 features: the device's data does not fit it
    assert main(["data", "check", "--task", task_toml(tmp_path, keras_json(SOFTMAX_OUT, inputs=3)), str(data)]) == 2
    assert "does not match the data's input shape [2]" in capsys.readouterr().err
    data.write_text(GOOD.replace("a,b,state", "a,c,state", 1))
    assert main(["data", "check", "--task", task_toml(tmp_path, GOOD_MODEL), str(data)]) == 2
    assert "column 'b' not found" in capsys.readouterr().err
