"""The README's examples run, and CI calls the README's test command."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("index", range(len(code_blocks("python"))))
def test_python_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (runs/, images)
    source = code_blocks("python")[index]
    exec(compile(source, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


def test_environment_example_prints_three_stages(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = code_blocks("python")[0]
    exec(compile(source, "README.md", "exec"), {"__name__": "__readme__"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    test_command = ci[-1].strip()
    bash_blocks = [b.strip() for b in code_blocks("bash")]
    assert test_command in bash_blocks
