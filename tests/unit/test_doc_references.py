"""What the docs name exists: repository paths and fully qualified Sphinx references in
README.md, pyproject.toml and the packages' docstrings and comments."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "lossagent_env", "benchmarks")

_PATH = re.compile(r"(?<![\w/.])((?:agents|lossagent_env|benchmarks|tests)/[\w/.*-]*[\w*])")
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc):`~?((?:agents|lossagent_env|benchmarks)(?:\.\w+)+)`")


def _documents() -> list[Path]:
    files = [REPO / "README.md", REPO / "pyproject.toml"]
    for package in PACKAGES:
        files += sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def _resolves(target: str) -> bool:
    """True if ``target`` is a module, or an attribute chain of the longest module prefix."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            if not hasattr(found, name):
                return False
            found = getattr(found, name)
        return True
    return False


@pytest.fixture(scope="module")
def documents() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in _documents()}


def test_named_paths_exist(documents):
    missing = [
        f"{name}: {match}"
        for name, text in documents.items()
        for match in _PATH.findall(text)
        if "*" not in match and not (REPO / match).exists()  # a pattern is not a path
    ]
    assert missing == []


def test_qualified_references_resolve(documents):
    unresolved = [
        f"{name}: {target}"
        for name, text in documents.items()
        for target in sorted(set(_ROLE.findall(text)))
        if not _resolves(target)
    ]
    assert unresolved == []
