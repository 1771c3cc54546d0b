"""Patch: the keys of a forced tool call are written for the model, several tokens per step.

In the answer to a forced tool call, an object whose properties are all required, the
text between two values is fixed by the grammar: after ``{`` or a ``,`` comes the next
key, `` "ssim": ``, with the single spaces SmolLM2 writes itself (the grammar allows each
space or none). Generated one token at a time, these keys are about half of the
answer's tokens (23 of 47 in the smoke suite) and of its time. Here they are appended to
the answer as a whole and evaluated in one batch with the token before them
(jump-forward decoding), after a check that the grammar accepts each of them; the model
still chooses every value and every character that has an alternative.

This wraps ``LlamaGrammar.from_json_schema`` (to keep the key texts of a flat object
schema with the grammar) and ``Llama.generate`` (to hand the key tokens to the sampler
of the grammar_first patch, which must be applied first, through the ``send`` of
llama-cpp-python's own generator, which evaluates them in one batch). Other requests are
served unchanged.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

from lossagent_env.chat.local.patches.base import Patch, absent, missing_in_source, unset_in_init

__all__ = ["PATCH", "install", "internals", "key_texts"]

INSTALLED = "lossagent_jump_forward"
"""Attribute that marks the installed ``Llama.generate`` (a second wrapper would write every key twice)."""


def internals() -> list[str]:
    """What the patch replaces or relies on, where this llama-cpp-python lacks it or has changed it."""
    missing = absent(
        "llama_grammar.LlamaGrammar.from_json_schema", "llama.Llama.generate", "llama.Llama.tokenize",
        "llama.Llama.detokenize",
    )
    missing += unset_in_init("llama.Llama", "draft_model", "_sampler")
    if "llama_grammar.LlamaGrammar.from_json_schema" not in missing:
        from llama_cpp import llama_grammar

        method = llama_grammar.LlamaGrammar.from_json_schema
        if not (inspect.ismethod(method) and method.__self__ is llama_grammar.LlamaGrammar):
            missing.append("LlamaGrammar.from_json_schema (a class method)")
    if "llama.Llama.generate" not in missing:
        missing += missing_in_source(
            "llama.Llama.generate", "the send() of Llama.generate's generator",
            "tokens_or_none = yield token", "tokens.extend(tokens_or_none)",
        )
    return missing


def key_texts(json_schema: str) -> list[str] | None:
    """The key texts written ahead for a flat object schema whose keys are all required
    (`` "l1": ``, with the opening quote of a plain string value), else None."""
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


class _Keys:
    """Follows the answer's JSON text; after ``{`` or a top-level ``,`` it names the key
    that must come next."""

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


def _jump_forward(llm: Any, inner: Any, texts: list[str]) -> Iterator[int]:
    keys = _Keys(texts)
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


def install() -> None:
    """Wrap ``LlamaGrammar.from_json_schema`` and ``Llama.generate`` (once: a second call
    changes nothing)."""
    from llama_cpp import llama as llama_module
    from llama_cpp import llama_grammar

    grammar_class: Any = llama_grammar.LlamaGrammar
    llama_class: Any = llama_module.Llama
    if getattr(llama_class.generate, INSTALLED, False):
        return
    stock_from_schema = grammar_class.from_json_schema.__func__
    stock_generate = llama_class.generate

    def from_json_schema(cls: Any, json_schema: str, verbose: bool = True) -> Any:
        grammar = stock_from_schema(cls, json_schema, verbose=verbose)
        grammar.lossagent_keys = key_texts(json_schema)
        return grammar

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        texts = getattr(kwargs.get("grammar"), "lossagent_keys", None)
        inner = stock_generate(self, tokens, *args, **kwargs)
        if not texts or args or kwargs.get("stopping_criteria") is not None or self.draft_model is not None:
            return inner
        return _jump_forward(self, inner, texts)

    setattr(generate, INSTALLED, True)
    grammar_class.from_json_schema = classmethod(from_json_schema)
    llama_class.generate = generate


PATCH = Patch(
    "jump_forward", "the keys of answers are generated token by token (slower)", internals, install, ("grammar_first",)
)
