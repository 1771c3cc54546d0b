"""LossAgent Gym: training of an image-restoration network as a Gymnasium environment.

Importing this package registers the environment ids: one per task of
:data:`lossagent_env.tasks.TASKS` (``LossAgent/SuperResolution-v0``, ``Denoising-v0``,
``JPEG-v0``; each accepts the keyword arguments of :class:`lossagent_env.config.EnvConfig`,
see docs/env.md), and ``LossAgent/Tabular-v0``, the replay of a precomputed table
(:mod:`lossagent_env.tabular`).

The package itself imports neither Gymnasium nor torch, so a light submodule (the
registry, the asset catalogue) stays light: the ids are registered at once if Gymnasium is
already imported, else as soon as it is. ``EnvConfig``, ``ENV_IDS`` and ``ALL_ENV_IDS``
load on first access.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    from lossagent_env.config import EnvConfig

__version__ = "0.1.0"
__all__ = ["ALL_ENV_IDS", "ENV_IDS", "TABULAR_ENV_ID", "EnvConfig", "__version__"]

TABULAR_ENV_ID = "LossAgent/Tabular-v0"
"""The id of table replays (:mod:`lossagent_env.tabular`)."""


def _env_ids() -> dict[str, str]:
    from lossagent_env.tasks import TASKS

    return {task.env_id: key for key, task in TASKS.items()}


def __getattr__(name: str) -> Any:
    # ENV_IDS: env id -> task key of the live envs, from lossagent_env.tasks.TASKS.
    # ALL_ENV_IDS: every id this package registers (what "did you mean" hints choose from).
    if name == "ENV_IDS":
        return _env_ids()
    if name == "ALL_ENV_IDS":
        return (*sorted(_env_ids()), TABULAR_ENV_ID)
    if name == "EnvConfig":
        from lossagent_env.config import EnvConfig

        return EnvConfig
    raise AttributeError(f"module 'lossagent_env' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _register(gym: ModuleType) -> None:
    """Register every id of this package with Gymnasium (ids already there are kept)."""
    for env_id, task in _env_ids().items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="lossagent_env.env:make_env", kwargs={"task": task})
    if TABULAR_ENV_ID not in gym.registry:
        gym.register(id=TABULAR_ENV_ID, entry_point="lossagent_env.tabular.replay:TabularEnv")


class _RegisterWhenGymnasiumLoads:
    """A meta path finder: registers the ids right after ``gymnasium`` is imported, then
    steps aside."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "gymnasium":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            _register(module)

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


if "gymnasium" in sys.modules:
    _register(sys.modules["gymnasium"])
elif not any(isinstance(finder, _RegisterWhenGymnasiumLoads) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenGymnasiumLoads())


def _after_fork_in_child() -> None:
    # A forked child inherits the parent's OpenMP thread pool without its threads
    # (GNU libgomp does not survive fork); its first parallel region then waits forever
    # for them. Setting the same count again is a no-op, so the child runs one thread,
    # which never enters that pool: forked workers (async vector envs) share the cores
    # between them. A worker can raise its own count with torch.set_num_threads.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
