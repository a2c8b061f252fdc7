"""The package layering holds: ``lint-imports`` checks the contract in pyproject.toml ([tool.importlinter]):
bpcv_app (the command) over the roles edge_agent | coordinator | broker | deploy (independent of one
another) over ledger over the bpcv kernel.

The negative control copies the packages into a temporary folder, adds one forbidden import there
(the kernel importing the app, and one role importing another) and checks that lint-imports fails and
names both. To see it fail by hand: add ``import bpcv_app.cli`` to any module under bpcv/, run
``.venv/bin/lint-imports`` (exit 1, "bpcv is not allowed to import bpcv_app"), then remove the line.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bpcv", "bpcv_app", "edge_agent", "coordinator", "ledger", "broker", "deploy")
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")

pytestmark = pytest.mark.skipif(
    LINT_IMPORTS is None, reason="lint-imports is not installed (pip install import-linter, in the test extra)"
)


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """lint-imports on the packages found first in ``cwd``, with the contracts of ``cwd``/pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_layering_contract_is_kept():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_or_sideways_import_breaks_the_contract(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "bpcv" / "upward.py").write_text("import bpcv_app.cli  # the kernel importing the app\n")
    (tmp_path / "edge_agent" / "sideways.py").write_text("import coordinator.server  # one role importing another\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout
    assert "bpcv.upward -> bpcv_app.cli" in done.stdout
    assert "edge_agent.sideways -> coordinator.server" in done.stdout
