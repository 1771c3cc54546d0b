"""The examples of README.md and docs/ run, their links resolve, and CI calls the
README's test command."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

DOCUMENTS = ["README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]


def code_blocks(language: str, document: str = "README.md") -> list[str]:
    text = (REPO / document).read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


EXAMPLES = [(doc, i) for doc in DOCUMENTS for i in range(len(code_blocks("python", doc)))]


@pytest.mark.parametrize(("document", "index"), EXAMPLES, ids=[f"{d}:{i}" for d, i in EXAMPLES])
def test_python_example_runs(document, index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (runs/, images)
    source = code_blocks("python", document)[index]
    exec(compile(source, f"{document} python block {index}", "exec"), {"__name__": "__readme__"})


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


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_between_pages_resolve(document):
    base = (REPO / document).parent
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", (REPO / document).read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        page = (base / path) if path else REPO / document
        if not page.is_file():
            broken.append(target)
        elif anchor and anchor not in {_anchor(h) for h in re.findall(r"^#+ (.*)$", page.read_text(), re.M)}:
            broken.append(target)
    assert broken == []
