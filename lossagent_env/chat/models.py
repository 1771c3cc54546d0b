"""Turning a model argument into a LangChain chat model, and keeping its key secret.

Objectives that read text (:mod:`lossagent_env.objectives.text`) and the LLM agent
(``agents.llm``) accept the same model arguments, resolved here:

* a LangChain ``BaseChatModel``: used as is;
* ``"local"``: the embedded SmolLM2 model behind a loopback llama.cpp server
  (:mod:`lossagent_env.chat.local`);
* ``"provider:model"`` (``"openai:gpt-4o-mini"``): ``langchain.chat_models.init_chat_model``;
* a bare model name with ``base_url``: ``ChatOpenAI`` on an OpenAI-compatible server
  (vLLM, Ollama, llama.cpp);
* None: ``$LOSSAGENT_LLM``, else ``"local"``.

Environment variables:
    LOSSAGENT_LLM: the default model, in any of the string forms above.
    LOSSAGENT_LLM_BASE_URL: base URL used when ``base_url`` is not given.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, SecretStr

__all__ = ["BASE_URL_ENV_VAR", "MODEL_ENV_VAR", "is_embedded", "model_name", "resolve_chat_model", "secret_values"]

MODEL_ENV_VAR = "LOSSAGENT_LLM"
"""Environment variable naming the default model."""

BASE_URL_ENV_VAR = "LOSSAGENT_LLM_BASE_URL"
"""Environment variable giving ``base_url`` when the argument is not set."""

_NO_KEY = "sk-no-key-needed"
"""Placeholder key for OpenAI-compatible servers that check none (vLLM, llama.cpp)."""

# Providers whose LangChain classes take ``timeout`` and ``max_retries``; others keep
# their own retry settings (their retries then come on top of the counted ones).
_RETRY_AWARE_PROVIDERS = ("openai", "azure_openai", "anthropic")


_Model = TypeVar("_Model")


def _named(model: _Model | None) -> _Model | str:
    """``model``, or the default model's name when it is None (``$LOSSAGENT_LLM``, else ``"local"``)."""
    return os.environ.get(MODEL_ENV_VAR) or "local" if model is None else model


def is_embedded(model: object) -> bool:
    """Whether :func:`resolve_chat_model` turns ``model`` into the embedded local model.

    That is ``"local"``, or None while ``$LOSSAGENT_LLM`` is unset, empty or ``"local"``.
    Its server runs in the process that asks it, on that process's cores, so a caller
    that runs many such agents can run them in one process and share the server.
    """
    return _named(model) == "local"


def resolve_chat_model(
    model: BaseChatModel | str | None,
    *,
    base_url: str | None = None,
    api_key: SecretStr | None = None,
    timeout: float | None = None,
    temperature: float = 0.0,
) -> BaseChatModel:
    """Turn a model argument (see the module docstring) into a LangChain chat model.

    Args:
        model: A chat model, ``"local"``, ``"provider:model"``, a model name with
            ``base_url``, or None.
        base_url: Server URL for OpenAI-compatible servers; default
            ``$LOSSAGENT_LLM_BASE_URL``.
        api_key: The key, if any.
        timeout: Request timeout in seconds.
        temperature: Sampling temperature.

    Returns:
        The chat model. Models built here have their client's own retries off
        (``max_retries=0``) so that :meth:`lossagent_env.chat.StructuredChat.ask`
        counts every retry exactly.

    Raises:
        TypeError: ``model`` is neither a string nor a chat model.
        ValueError: A string that cannot be interpreted.
        ImportError: The provider's package (or the ``local-llm`` extra) is missing.
    """
    model = _named(model)
    if not isinstance(model, str):
        if not isinstance(model, BaseChatModel):
            raise TypeError(
                f"model={model!r} is a {type(model).__name__}. Allowed: a LangChain BaseChatModel "
                "or a string ('local', 'provider:model', or a model name with base_url)."
            )
        return model
    base_url = base_url or os.environ.get(BASE_URL_ENV_VAR) or None
    options: dict[str, Any] = {"temperature": temperature}
    if model == "local":
        from lossagent_env.chat.local.client import local_chat_model

        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        return local_chat_model(temperature=temperature, max_retries=0, **extra)
    if ":" in model:
        provider = model.split(":", 1)[0]
        if provider in _RETRY_AWARE_PROVIDERS or base_url:
            options["max_retries"] = 0
            if timeout is not None:
                options["timeout"] = timeout
        if base_url:
            options["base_url"] = base_url
            if provider == "openai":
                options["use_responses_api"] = False
                options["api_key"] = api_key or SecretStr(_NO_KEY)
        elif api_key is not None:
            options["api_key"] = api_key
        from langchain.chat_models import init_chat_model

        try:
            return init_chat_model(model, **options)
        except ImportError:
            raise
        except Exception as e:  # the provider's client refused: say which model and why
            raise ValueError(_cannot_build(model, e, api_key)) from None
    if base_url:
        from langchain_openai import ChatOpenAI

        try:
            return ChatOpenAI(
                model=model,
                base_url=base_url,
                api_key=api_key or SecretStr(_NO_KEY),
                timeout=timeout,
                max_retries=0,
                use_responses_api=False,
                **options,
            )
        except Exception as e:
            raise ValueError(_cannot_build(model, e, api_key)) from None
    raise ValueError(
        f"model={model!r} names no provider and no base_url was given. Allowed: 'local', "
        "'provider:model' (e.g. 'openai:gpt-4o-mini'), a model name with base_url=..., "
        "or a LangChain chat model."
    )


def _cannot_build(model: str, error: BaseException, api_key: SecretStr | None) -> str:
    text = f"Cannot build the chat model {model!r}: {type(error).__name__}: {error}"
    for secret in secret_values(api_key):
        text = text.replace(secret, "***")
    return " ".join(text.split())


def model_name(model: Any) -> str:
    """The model's name (``model_name``, ``model`` or ``model_id``), else its class name."""
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def secret_values(*objects: Any) -> list[str]:
    """Secret strings held by ``objects`` (SecretStr values, and SecretStr fields)."""
    found: list[str] = []
    for obj in objects:
        if isinstance(obj, SecretStr):
            found.append(obj.get_secret_value())
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                value = getattr(obj, name, None)
                if isinstance(value, SecretStr):
                    found.append(value.get_secret_value())
    return [s for s in found if len(s) >= 4]
