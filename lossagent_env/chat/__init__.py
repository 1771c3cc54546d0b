"""Chat models shared by the text objectives and the LLM agent.

* :mod:`lossagent_env.chat.models`: :func:`resolve_chat_model` turns ``"local"``,
  ``"provider:model"``, a model name with ``base_url``, or a LangChain chat model into
  a chat model (``$LOSSAGENT_LLM`` names the default).
* :mod:`lossagent_env.chat.structured`: :class:`StructuredChat`, the one
  ask-and-retry loop for answers that must fit a Pydantic schema, with counted re-asks,
  transport retries and errors.
* :mod:`lossagent_env.chat.local`: the embedded SmolLM2 model behind a loopback
  llama.cpp server (the ``local-llm`` extra); imported only when ``"local"`` is used.
"""

from __future__ import annotations

from lossagent_env.chat.models import (
    BASE_URL_ENV_VAR,
    MODEL_ENV_VAR,
    is_embedded,
    model_name,
    resolve_chat_model,
    secret_values,
)
from lossagent_env.chat.structured import METHODS, Answer, StructuredChat

__all__ = [
    "BASE_URL_ENV_VAR",
    "METHODS",
    "MODEL_ENV_VAR",
    "Answer",
    "StructuredChat",
    "is_embedded",
    "model_name",
    "resolve_chat_model",
    "secret_values",
]
