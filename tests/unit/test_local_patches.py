"""The embedded server's patches of llama-cpp-python apply only where they were tested.

Each check runs against the installed llama-cpp-python, with the internal it reads
removed or changed where a test says so (restored afterwards); nothing here starts a
server. The end-to-end path (a server that cannot apply its patches, a bench that says
so) is in ``tests/integration/test_local_llm_server.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lossagent_env.chat.local.patches import PATCHES, TESTED_VERSIONS, apply_patches, check_names, warning_line

REPO = Path(__file__).resolve().parents[2]
ALL = list(PATCHES)


def _pin(text: str, package: str) -> str | None:
    match = re.search(rf"^{re.escape(package)}==(\S+)", text, re.MULTILINE)
    return match.group(1) if match else None


@pytest.mark.local_llm
def test_constraints_pin_the_release_the_patches_were_tested_with():
    """CI installs with constraints.txt, so it runs the patches on their tested release;
    pyproject keeps the range users may install."""
    import llama_cpp

    assert _pin((REPO / "constraints.txt").read_text(), "llama-cpp-python") == TESTED_VERSIONS[0]
    assert '"llama-cpp-python[server]>=0.3.36,<0.4"' in (REPO / "pyproject.toml").read_text()
    assert llama_cpp.__version__ == TESTED_VERSIONS[0], "this environment was not installed with constraints.txt"


@pytest.mark.local_llm
@pytest.mark.parametrize("name", ALL)
def test_every_patch_applies_on_the_pinned_release(name: str):
    assert PATCHES[name].internals() == []
    assert PATCHES[name].why_not(applied=ALL) is None


@pytest.mark.local_llm
def test_another_release_applies_no_patch_and_keeps_the_stock_code(monkeypatch: pytest.MonkeyPatch):
    import llama_cpp
    from llama_cpp import llama_grammar
    from llama_cpp.llama import Llama

    monkeypatch.setattr(llama_cpp, "__version__", "0.3.99")
    stock = (Llama._init_sampler, Llama.generate, llama_grammar.SchemaConverter.visit)
    outcome = apply_patches(ALL)
    assert set(outcome) == set(ALL)
    for why in outcome.values():
        assert why is not None and "0.3.99" in why and TESTED_VERSIONS[0] in why
    assert (Llama._init_sampler, Llama.generate, llama_grammar.SchemaConverter.visit) == stock


@pytest.mark.parametrize(
    ("owner", "attribute", "patch", "named"),
    [
        ("llama_cpp.llama_grammar:SchemaConverter", "_add_rule", "bounded_numbers", "SchemaConverter._add_rule"),
        ("llama_cpp.llama:Llama", "_init_sampler", "grammar_first", "Llama._init_sampler"),
        ("llama_cpp:", "llama_sampler_clone", "grammar_first", "llama_sampler_clone"),
        ("llama_cpp.llama_grammar:LlamaGrammar", "from_json_schema", "jump_forward", "LlamaGrammar.from_json_schema"),
    ],
    ids=["schema-converter-add-rule", "init-sampler", "c-function", "from-json-schema"],
)
@pytest.mark.local_llm
def test_a_missing_internal_is_named_and_only_its_patch_is_left_out(
    monkeypatch: pytest.MonkeyPatch, owner: str, attribute: str, patch: str, named: str
):
    import importlib

    module, _, cls = owner.partition(":")
    target = getattr(importlib.import_module(module), cls) if cls else importlib.import_module(module)
    monkeypatch.delattr(target, attribute)
    reasons = {name: PATCHES[name].why_not(applied=ALL) for name in ALL}
    assert reasons[patch] is not None and named in reasons[patch]
    assert [name for name, why in reasons.items() if why is not None] == [patch]


@pytest.mark.local_llm
def test_an_instance_attribute_the_constructor_no_longer_sets_is_named(monkeypatch: pytest.MonkeyPatch):
    """``_n_vocab`` exists only on a loaded model: its presence is read from the constructor."""
    from llama_cpp.llama import Llama

    stock_init = Llama.__init__

    def __init__(self, *args, **kwargs):  # a release that renamed it
        stock_init(self, *args, **kwargs)

    monkeypatch.setattr(Llama, "__init__", __init__)
    why = PATCHES["grammar_first"].why_not(applied=ALL)
    assert why is not None and "Llama._n_vocab" in why


@pytest.mark.local_llm
def test_a_generator_without_send_is_named(monkeypatch: pytest.MonkeyPatch):
    from llama_cpp.llama import Llama

    def generate(self, tokens, **kwargs):  # yields tokens but ignores what is sent
        yield from tokens

    monkeypatch.setattr(Llama, "generate", generate)
    why = PATCHES["jump_forward"].why_not(applied=ALL)
    assert why is not None and "send()" in why


@pytest.mark.local_llm
def test_a_changed_token_struct_is_named(monkeypatch: pytest.MonkeyPatch):
    import ctypes

    import llama_cpp

    class Wider(ctypes.Structure):
        _fields_ = [("id", ctypes.c_int32), ("logit", ctypes.c_double), ("p", ctypes.c_float)]

    monkeypatch.setattr(llama_cpp, "llama_token_data", Wider)
    why = PATCHES["grammar_first"].why_not(applied=ALL)
    assert why is not None and "layout of llama_token_data" in why


@pytest.mark.local_llm
def test_jump_forward_needs_grammar_first():
    why = PATCHES["jump_forward"].why_not(applied=["bounded_numbers"])
    assert why == "it needs grammar_first"


def test_warning_line_is_one_line_naming_each_patch_its_reason_and_the_fix():
    line = warning_line({"bounded_numbers": None, "grammar_first": "reason A", "jump_forward": "reason A"})
    assert line is not None and "\n" not in line
    assert "patches grammar_first, jump_forward (reason A)" in line
    assert "bounded_numbers" not in line
    assert f"llama-cpp-python=={TESTED_VERSIONS[0]}" in line
    line = warning_line({"bounded_numbers": "reason A", "grammar_first": None, "jump_forward": "reason B"})
    assert line is not None and "(bounded_numbers: reason A; jump_forward: reason B)" in line
    assert warning_line(dict.fromkeys(ALL)) is None


def test_an_unknown_patch_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"'grammar_last'.*bounded_numbers"):
        check_names(["grammar_last"])
