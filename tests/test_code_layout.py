"""The codebase's shape, checked (issue 13): modules of the role packages stay readable, no class grows
back into a god object, and message bodies are read in one place only.

Each check is a pure function over source text, tested on a small bad example first (the negative
control), then run over the project.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bpcv", "bpcv_app", "edge_agent", "coordinator", "ledger", "broker", "deploy")
ROLE_PACKAGES = ("edge_agent", "coordinator", "ledger", "broker")
MAX_MODULE_LINES = 400
MAX_INSTANCE_ATTRIBUTES = 15
BODY_READ = re.compile(r"\bbody\.get\(")
BODY_READERS_ALLOWED = {"bpcv/messages.py"}


def python_files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def instance_attributes(source: str) -> dict[str, set[str]]:
    """Per class that is not a data record (dataclass), the names it assigns as ``self.NAME``."""
    out: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        decorators = {ast.unparse(d).split("(")[0] for d in node.decorator_list}
        if decorators & {"dataclass", "dataclasses.dataclass"}:
            continue  # a record of fields (a message body, a config, a row), not an object with behaviour
        names = set()
        for inner in ast.walk(node):
            targets = inner.targets if isinstance(inner, ast.Assign) else [getattr(inner, "target", None)]
            for target in targets:
                for t in ast.walk(target) if target is not None else ():
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        names.add(t.attr)
        out[node.name] = names
    return out


def test_instance_attribute_counter_on_a_known_example():
    source = """
class God:
    def __init__(self):
        self.a = self.b = 1
        self.c: int = 2
        self.d, self.e = 3, 4
    def later(self):
        self.f += 1
        self.a = 0
@dataclass
class Record:
    x: int
"""
    assert instance_attributes(source) == {"God": {"a", "b", "c", "d", "e", "f"}}


def test_no_module_of_a_role_package_is_over_400_lines():
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in python_files(*ROLE_PACKAGES)}
    assert len(lines) > 30 and max(lines.values()) > 100  # the walk reaches the role packages
    assert {p: n for p, n in lines.items() if n > MAX_MODULE_LINES} == {}


def test_no_class_has_more_than_15_instance_attributes():
    assert len(python_files(*PACKAGES)) > 50  # the walk reaches the project
    big = {
        f"{p.relative_to(ROOT)}:{cls}": len(names)
        for p in python_files(*PACKAGES)
        for cls, names in instance_attributes(p.read_text()).items()
        if len(names) > MAX_INSTANCE_ATTRIBUTES
    }
    assert big == {}


def test_message_bodies_are_read_only_in_bpcv_messages():
    assert BODY_READ.search('x = env.body.get("scores", {})') and not BODY_READ.search("read(env, Vote)")
    readers = {str(p.relative_to(ROOT)) for p in python_files(*PACKAGES) if BODY_READ.search(p.read_text())}
    assert readers == BODY_READERS_ALLOWED
