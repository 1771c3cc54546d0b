"""The training budgets of agents that tune before an episode, with their bounds.

Every agent family checks its arguments once, when it is built, through one pydantic
schema and :func:`lossagent_env.arguments.check_arguments` (which also gives the shared
number types ``Finite``, ``Positive`` and ``NonNegative``); the budgets below bound what
an agent may spend on training, so a budget of years is refused, not started.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = ["MAX_TRAIN_EPISODES", "MAX_TRAIN_STEPS", "TrainEpisodes", "TrainSteps"]

MAX_TRAIN_STEPS = 10_000_000
"""Most env steps an agent trains for (``PPOAgent(train_steps=...)``): about 8 hours of
PPO on a table at its 20,000 steps a minute, far longer on a live env."""

MAX_TRAIN_EPISODES = 1_000_000
"""Most training episodes of an agent that tunes on a table's training instances (a
bandit's ``train_episodes``): minutes to hours of replay."""

TrainSteps = Annotated[int, Field(strict=True, ge=1, le=MAX_TRAIN_STEPS)]
"""A training budget in env steps: an integer in ``[1, MAX_TRAIN_STEPS]``."""
TrainEpisodes = Annotated[int, Field(strict=True, ge=0, le=MAX_TRAIN_EPISODES)]
"""A training budget in episodes: an integer in ``[0, MAX_TRAIN_EPISODES]`` (0: none)."""
