"""The build backend of the distribution: setuptools', leaving no ``build/`` folder behind.

setuptools builds a wheel in ``build/`` beside ``pyproject.toml`` and keeps it, so
``pip wheel .`` or ``pip install .`` leave a copy of every module in the source tree,
and a module deleted since then would go into the next wheel from that copy. Here a
build that finds no ``build/`` removes the one it made; one that finds it leaves it
alone (it is not this build's).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import (  # noqa: F401  (the rest of the PEP 517/660 interface)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

BUILD_FOLDER = Path("build")
"""setuptools' build folder, relative to the source tree (the build's working directory)."""


@contextlib.contextmanager
def _no_new_build_folder() -> Iterator[None]:
    existed = BUILD_FOLDER.exists()
    try:
        yield
    finally:
        if not existed:
            shutil.rmtree(BUILD_FOLDER, ignore_errors=True)


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    """setuptools' ``build_wheel``, removing the ``build/`` folder it creates."""
    with _no_new_build_folder():
        return build_meta.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    """setuptools' ``build_editable``, removing the ``build/`` folder it creates."""
    with _no_new_build_folder():
        return build_meta.build_editable(wheel_directory, config_settings, metadata_directory)
