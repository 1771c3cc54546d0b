"""Agents that choose the loss weights of a LossAgent env, and the loop that runs them.

```python
from agents import UCBAgent, run_episode, make_agent
traj = run_episode(env, UCBAgent(), seed=0)
traj = run_episode(env, make_agent("dwa", temperature=2.0), seed=0)
```

:data:`AGENTS` gives the short names of :func:`make_agent` (the benchmark runner and the
CLI use them). See docs/agents.md for the families, what each plays on a preset env, and
which heavy parts are imported only when an agent needs them.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agents.bandits import EpsilonGreedyAgent, ThompsonAgent, UCBAgent
from agents.base import Agent, AgentSpec, BaseAgent, InvalidActionError, Stage, Trajectory
from agents.dwa import DWAAgent
from agents.episode import run_episode
from agents.fixed import FixedAgent
from agents.pbt import PBTAgent, run_pbt
from agents.ppo import PPOAgent
from agents.presets import weight_presets
from agents.random_agent import RandomAgent
from agents.transfer import TransferAgent
from lossagent_env.registry import unknown_name_message

if TYPE_CHECKING:
    from agents.llm.agent import LLMAgent

__all__ = [
    "AGENTS",
    "Agent",
    "AgentSpec",
    "BaseAgent",
    "DWAAgent",
    "EpsilonGreedyAgent",
    "FixedAgent",
    "InvalidActionError",
    "LLMAgent",
    "PBTAgent",
    "PPOAgent",
    "RandomAgent",
    "Stage",
    "ThompsonAgent",
    "Trajectory",
    "TransferAgent",
    "UCBAgent",
    "check_agent_arguments",
    "make_agent",
    "run_episode",
    "run_pbt",
    "uses_embedded_model",
    "weight_presets",
]

AGENTS: dict[str, str] = {
    "fixed": "agents.fixed:FixedAgent",
    "random": "agents.random_agent:RandomAgent",
    "egreedy": "agents.bandits:EpsilonGreedyAgent",
    "ucb": "agents.bandits:UCBAgent",
    "thompson": "agents.bandits:ThompsonAgent",
    "dwa": "agents.dwa:DWAAgent",
    "ppo": "agents.ppo:PPOAgent",
    "pbt": "agents.pbt:PBTAgent",
    "transfer": "agents.transfer:TransferAgent",
    "llm": "agents.llm.agent:LLMAgent",
}
"""Short name -> ``"module:Class"``, imported on demand by :func:`make_agent`."""


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def make_agent(name: str, **kwargs: Any) -> Any:
    """Build the agent registered as ``name`` with ``kwargs``.

    Args:
        name: One of :data:`AGENTS`.
        **kwargs: Arguments of the agent's class.

    Raises:
        KeyError: Unknown name, or an argument the agent does not take (the message
            suggests the closest one).
    """
    return check_agent_arguments(name, kwargs)(**kwargs)


def check_agent_arguments(name: str, kwargs: Mapping[str, Any]) -> type:
    """The class of agent ``name``, once ``kwargs`` are known to be its arguments.

    Raises:
        KeyError: Unknown agent, or an argument it does not take ("Did you mean").
    """
    if name not in AGENTS:
        raise KeyError(unknown_name_message("agent", name, AGENTS))
    cls = _load(AGENTS[name])
    parameters = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        allowed = [p for p, v in parameters.items() if v.kind is not v.VAR_POSITIONAL]
        for key in kwargs:
            if key not in allowed:
                raise KeyError(unknown_name_message(f"argument of agent {name!r}", key, allowed))
    return cls


def uses_embedded_model(name: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether agent ``name`` with ``kwargs`` asks the embedded local chat model, as its
    class declares (:meth:`BaseAgent.uses_embedded_model`); ``KeyError`` for an unknown
    agent or an argument it does not take."""
    declared = getattr(check_agent_arguments(name, kwargs), "uses_embedded_model", None)
    return bool(declared(kwargs)) if callable(declared) else False


def __getattr__(name: str) -> Any:
    if name == "LLMAgent":
        return _load(AGENTS["llm"])
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"LLMAgent"})
