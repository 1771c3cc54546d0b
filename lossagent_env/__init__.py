"""LossAgent Gym: training of an image-restoration network as a Gymnasium environment.

Importing this package registers the environment ids::

    LossAgent/SuperResolution-v0   bicubic down-sampling, ``scale`` 2 or 4
    LossAgent/Denoising-v0         Gaussian noise, ``sigma``
    LossAgent/JPEG-v0              JPEG compression, ``quality``

Each accepts the keyword arguments of :class:`lossagent_env.config.EnvConfig`.

    LossAgent/Tabular-v0           replay of a precomputed table (``table=``,
                                   ``objective=``); see :mod:`lossagent_env.tabular`
"""

from __future__ import annotations

import os
import sys

import gymnasium as gym

from lossagent_env.config import EnvConfig
from lossagent_env.tasks import TASKS

__version__ = "0.1.0"
__all__ = ["ALL_ENV_IDS", "ENV_IDS", "TABULAR_ENV_ID", "EnvConfig", "__version__"]

ENV_IDS = {task.env_id: key for key, task in TASKS.items()}
"""Env id -> task key of the live envs, from the task registry (:data:`lossagent_env.tasks.TASKS`)."""

TABULAR_ENV_ID = "LossAgent/Tabular-v0"
"""The id of table replays (:mod:`lossagent_env.tabular`)."""

ALL_ENV_IDS = (*sorted(ENV_IDS), TABULAR_ENV_ID)
"""Every id this package registers: what "did you mean" hints choose from."""

for _env_id, _task in ENV_IDS.items():
    if _env_id not in gym.registry:
        gym.register(
            id=_env_id,
            entry_point="lossagent_env.env:make_env",
            kwargs={"task": _task},
        )
if TABULAR_ENV_ID not in gym.registry:
    gym.register(
        id=TABULAR_ENV_ID,
        entry_point="lossagent_env.tabular.replay:TabularEnv",
    )


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
