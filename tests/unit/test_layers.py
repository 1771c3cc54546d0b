"""The package layers run one way and no module imports another that imports it back.

``lossagent_env`` <- ``agents`` <- ``benchmarks`` (the command line lives in
``benchmarks.cli``), and inside ``benchmarks`` suites <- execution <- reports <- runner
<- cli. The contracts are import-linter's layers contracts in ``pyproject.toml``; an
import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("lossagent_env", "agents", "benchmarks", "measure")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_layer_contract_holds():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, upward, shown",
    [
        ("lossagent_env/env.py", "agents.base", "lossagent_env.env -> agents.base"),
        # the runner builds the report: an execution module that did so would run back up
        ("benchmarks/execution/executor.py", "benchmarks.reports.report", "benchmarks.execution.executor -> benchmarks.reports.report"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path, module, upward, shown):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path = tmp_path / module
    # Hidden inside a function, as the cycles this contract ended were.
    path.write_text(path.read_text() + f"\n\ndef _upward():\n    import {upward}  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert shown in result.stdout


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES)
    modules = sorted(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in modules}
    cycles = []
    for module in modules:
        # A module that reaches itself again through the modules it imports.
        seen, todo = set(), list(edges[module])
        while todo:
            current = todo.pop()
            if current == module:
                cycles.append(module)
                break
            if current not in seen:
                seen.add(current)
                todo.extend(edges.get(current, ()))
    assert cycles == [], f"modules in import cycles: {cycles}"
