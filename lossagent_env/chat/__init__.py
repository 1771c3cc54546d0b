"""Chat models shared by the text objectives and the LLM agent.

* :mod:`lossagent_env.chat.models`: :func:`resolve_chat_model` turns ``"local"``,
  ``"provider:model"``, a model name with ``base_url``, or a LangChain chat model into
  a chat model (``$LOSSAGENT_LLM`` names the default).
* :mod:`lossagent_env.chat.structured`: :class:`StructuredChat`, the one
  ask-and-retry loop for answers that must fit a Pydantic schema, with counted re-asks,
  transport retries and errors.
* :mod:`lossagent_env.chat.caveats`: :func:`model_warnings`, what a model's user should
  know about how it answers (carried in the model's ``metadata``).
* :mod:`lossagent_env.chat.local`: the embedded SmolLM2 model behind a loopback
  llama.cpp server (the ``local-llm`` extra); imported only when ``"local"`` is used.

The names below load LangChain on first access, not when this package is imported: the
embedded model's server process imports :mod:`lossagent_env.chat.local` and needs none
of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossagent_env.chat.caveats import model_warnings
    from lossagent_env.chat.models import (
        BASE_URL_ENV_VAR,
        MODEL_ENV_VAR,
        is_embedded,
        model_name,
        resolve_chat_model,
        secret_values,
    )
    from lossagent_env.chat.structured import METHODS, Answer, RetrySettings, StructuredChat

__all__ = [
    "BASE_URL_ENV_VAR",
    "METHODS",
    "MODEL_ENV_VAR",
    "Answer",
    "RetrySettings",
    "StructuredChat",
    "is_embedded",
    "model_name",
    "model_warnings",
    "resolve_chat_model",
    "secret_values",
]

_HOMES = {
    **dict.fromkeys(("METHODS", "Answer", "RetrySettings", "StructuredChat"), "lossagent_env.chat.structured"),
    **dict.fromkeys(
        ("BASE_URL_ENV_VAR", "MODEL_ENV_VAR", "is_embedded", "model_name", "resolve_chat_model", "secret_values"),
        "lossagent_env.chat.models",
    ),
    "model_warnings": "lossagent_env.chat.caveats",
}
"""Name -> the module it is imported from on first access."""


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'lossagent_env.chat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
