"""Patch: greedy, grammar-constrained answers are sampled the way llama.cpp's own tools do.

llama-cpp-python runs a grammar-constrained request through one sampler chain,
repetition penalties -> grammar -> greedy, and the grammar step checks every token of
the vocabulary (49,152 for SmolLM2) against the grammar at every generated token.
llama.cpp's common sampler instead takes the best token first and checks only that
one; it applies the grammar to the whole vocabulary only when the grammar rejects it.
For greedy decoding the result is the same token: the best token, if the grammar allows
it, is also the best allowed one (ties go to the lowest id either way).

This patch wraps ``Llama._init_sampler`` so that a greedy request with a grammar (and
no logits processor or mirostat) gets such a sampler; every other request keeps the
stock chain. The sampler reads the model's ``_n_vocab`` and ``_model.vocab``, the
grammar's ``_grammar`` and ``_root``, and the logits through the C struct
``llama_token_data`` (``id`` int32, ``logit`` float, ``p`` float), viewed as a NumPy
record array.
"""

from __future__ import annotations

import ctypes
import inspect
from typing import Any

from lossagent_env.chat.local.patches.base import Patch, absent, unset_in_init

__all__ = ["PATCH", "install", "internals"]

_C_FUNCTIONS = (
    "llama_sampler_init_penalties", "llama_sampler_init_grammar", "llama_sampler_clone", "llama_sampler_accept",
    "llama_sampler_apply", "llama_sampler_free", "llama_get_logits_ith", "llama_token_data_array",
)
_SAMPLER_ARGUMENTS = (
    "temp", "grammar", "logits_processor", "mirostat_mode", "repeat_penalty", "frequency_penalty", "presence_penalty",
)


def internals() -> list[str]:
    """What the patch replaces or reads, where this llama-cpp-python lacks it or has changed it."""
    missing = absent("llama.Llama._init_sampler", "llama_token_data", *_C_FUNCTIONS)
    missing += unset_in_init("llama.Llama", "_n_vocab", "_model", "last_n_tokens_size")
    missing += unset_in_init("_internals.LlamaModel", "vocab")
    missing += unset_in_init("_internals.LlamaContext", "ctx")
    missing += unset_in_init("llama_grammar.LlamaGrammar", "_grammar", "_root")
    if "llama.Llama._init_sampler" not in missing:
        from llama_cpp import llama as llama_module

        parameters = inspect.signature(llama_module.Llama._init_sampler).parameters
        missing += [f"Llama._init_sampler({name}=...)" for name in _SAMPLER_ARGUMENTS if name not in parameters]
    if "llama_token_data" not in missing:
        import llama_cpp

        layout = [(name, kind) for name, kind, *_ in llama_cpp.llama_token_data._fields_]
        if layout != [("id", ctypes.c_int32), ("logit", ctypes.c_float), ("p", ctypes.c_float)]:
            missing.append("the layout of llama_token_data (id int32, logit float, p float)")
    return missing


def install() -> None:
    """Wrap ``Llama._init_sampler`` so that greedy constrained requests sample grammar-first."""
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
            if self.pending:  # a forced token (see the jump_forward patch)
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


PATCH = Patch("grammar_first", "constrained answers are sampled more slowly", internals, install)
