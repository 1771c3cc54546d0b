"""LLMAgent with scripted LangChain fake chat models: retries, corrections, fallbacks,
transport errors, secrets, and how the model argument is resolved."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage
from pydantic import SecretStr

from agents import run_episode
from agents.llm import LLMAgent, resolve_chat_model
from tests import fake_chat
from tests.toy_env import ToyLossEnv

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-test-SECRET-fake-key-0123456789"
GOOD = {"l1": 0.8, "ssim": 0.5, "gradient": 0.2, "gan": 0.0, "rationale": "pixel first"}


class ScriptedChatModel(fake_chat.ScriptedChatModel):
    """Replies from a script (an Exception in it is raised instead); holds an API key."""

    api_key: SecretStr = SecretStr(SECRET)


def tool(args) -> AIMessage:
    return fake_chat.tool_message(
        "LossWeights", args,
        usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
    )


def bad_json() -> AIMessage:
    return AIMessage(
        "", invalid_tool_calls=[{"name": "LossWeights", "args": '{"l1": 0.5,', "id": "c", "error": "bad json"}],
        usage_metadata={"input_tokens": 100, "output_tokens": 5, "total_tokens": 105},
    )


class FakeStatusError(Exception):
    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


def _run(script, stages, **kwargs):
    model = ScriptedChatModel(messages=iter(script))
    kwargs.setdefault("backoff_base", 0.0)
    agent = LLMAgent(model, **kwargs)
    traj = run_episode(ToyLossEnv(max_stages=stages), agent, seed=0)
    return traj, model


def test_valid_answers_become_actions_with_notes():
    traj, model = _run([tool(GOOD), tool({**GOOD, "gan": 0.1})], 2)
    np.testing.assert_allclose(traj.stages[0].action, [0.8, 0.5, 0.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(traj.stages[1].action, [0.8, 0.5, 0.2, 0.1], rtol=1e-6)
    notes = traj.stages[0].notes
    assert notes["rationale"] == "pixel first"
    assert (notes["retries"], notes["transport_retries"], notes["fallback"], notes["corrections"]) == (0, 0, False, [])
    assert (notes["prompt_tokens"], notes["completion_tokens"]) == (100, 10)
    assert notes["latency_s"] >= 0 and notes["model"] == "ScriptedChatModel"
    # The second prompt shows the first stage in the history table.
    assert "| 1 | 0.80 0.50 0.20 0.00 |" in model.seen[1][1].content


def test_malformed_answer_is_asked_again_with_the_error():
    traj, model = _run([bad_json(), AIMessage("no tool call"), tool(GOOD)], 1)
    notes = traj.stages[0].notes
    assert notes["retries"] == 2 and notes["fallback"] is False
    assert (notes["prompt_tokens"], notes["completion_tokens"]) == (200, 15)  # the plain reply has no usage
    assert len(model.seen) == 3
    reask = model.seen[1][-1].content
    assert "could not be used" in reask and "not valid JSON" in reask and '{"l1": 0.5,' in reask
    assert "no function call" in model.seen[2][-1].content
    np.testing.assert_allclose(traj.stages[0].action, [0.8, 0.5, 0.2, 0.0], rtol=1e-6)


def test_retries_used_up_fall_back_to_previous_weights(caplog):
    caplog.set_level(logging.WARNING, logger="agents.llm.agent")
    traj, _ = _run([tool(GOOD), bad_json(), bad_json(), bad_json(), tool({**GOOD, "l1": 0.1})], 3)
    second = traj.stages[1]
    assert second.notes["fallback"] is True and second.notes["retries"] == 2
    assert len(second.notes["errors"]) == 3
    assert second.action == traj.stages[0].action  # previous weights
    assert traj.stages[2].action[0] == pytest.approx(0.1)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("asking again" in m for m in messages) == 2
    assert sum("falling back" in m for m in messages) == 1


def test_first_decision_falls_back_to_one_half():
    traj, _ = _run([bad_json()] * 3, 1)
    assert traj.stages[0].action == [0.5] * 4 and traj.stages[0].notes["fallback"] is True


def test_out_of_range_is_clipped_and_missing_is_filled_from_previous():
    script = [tool(GOOD), tool({"l1": 1.5, "ssim": -0.5, "rationale": "x"})]
    traj, _ = _run(script, 2)
    notes = traj.stages[1].notes
    assert [(c["loss"], c["kind"]) for c in notes["corrections"]] == [
        ("l1", "clipped"), ("ssim", "clipped"), ("gradient", "filled"), ("gan", "filled"),
    ]
    np.testing.assert_allclose(traj.stages[1].action, [1.0, 0.0, 0.2, 0.0], rtol=1e-6)
    assert notes["retries"] == 0 and notes["fallback"] is False


def test_nan_is_rejected_and_asked_again():
    traj, _ = _run([tool({**GOOD, "ssim": float("nan")}), tool(GOOD)], 1)
    assert traj.stages[0].notes["retries"] == 1
    assert "finite" in traj.stages[0].notes["errors"][0]


def test_transport_errors_are_retried_then_fall_back():
    script = [TimeoutError("slow"), FakeStatusError(503, "unavailable"), tool(GOOD)] + [TimeoutError("slow")] * 3
    traj, model = _run(script, 2, transport_retries=2)
    first, second = traj.stages[0].notes, traj.stages[1].notes
    assert (first["transport_retries"], first["fallback"], first["retries"]) == (2, False, 0)
    assert (second["transport_retries"], second["fallback"], second["retries"]) == (2, True, 0)
    assert traj.stages[1].action == traj.stages[0].action
    assert len(model.seen) == 6


def test_an_unfixable_error_falls_back_at_once_and_the_key_is_scrubbed(caplog):
    caplog.set_level(logging.DEBUG)
    script = [FakeStatusError(401, f"Incorrect API key provided: {SECRET}")]
    traj, model = _run(script, 1)
    notes = traj.stages[0].notes
    assert notes["fallback"] is True and notes["retries"] == 0 and notes["transport_retries"] == 0
    assert len(model.seen) == 1
    assert "Incorrect API key provided: ***" in notes["errors"][0]
    assert SECRET not in json.dumps(traj.to_dict())
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_programming_errors_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        _run([ZeroDivisionError("bug")], 1)


def test_text_method_parses_plain_json_and_reasks_on_garbage():
    script = [AIMessage("Sure! Here you go."), AIMessage(json.dumps(GOOD))]
    traj, model = _run(script, 1, method="text")
    assert traj.stages[0].notes["retries"] == 1
    np.testing.assert_allclose(traj.stages[0].action, [0.8, 0.5, 0.2, 0.0], rtol=1e-6)
    assert "JSON instance that conforms to the JSON schema" in model.seen[0][1].content


def test_initial_weights_skip_the_model_for_the_first_stage():
    traj, model = _run([tool(GOOD)], 2, initial_weights={"l1": 1.0})
    assert traj.stages[0].action == [1.0, 0.0, 0.0, 0.0]
    assert traj.stages[0].notes == {"source": "initial_weights", "model": "ScriptedChatModel"}
    assert len(model.seen) == 1
    assert "| 1 | 1.00 0.00 0.00 0.00 |" in model.seen[0][1].content


def test_reset_clears_the_history():
    model = ScriptedChatModel(messages=iter([tool(GOOD)] * 4))
    agent = LLMAgent(model)
    run_episode(ToyLossEnv(max_stages=2), agent, seed=0)
    run_episode(ToyLossEnv(max_stages=2), agent, seed=1)
    assert "| 1 |" not in model.seen[2][1].content
    assert [r.stage for r in agent.records] == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "xml"}, "method='xml'"),
        ({"history": "random"}, "history='random'"),
        ({"max_retries": -1}, "max_retries=-1"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LLMAgent(ScriptedChatModel(messages=iter([])), **kwargs)


# ---------------------------------------------------------------- model resolution
def test_provider_string_builds_chat_openai_with_retries_off(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    agent = LLMAgent("openai:gpt-4o-mini", timeout=7.0)
    agent.reset(_spec(), seed=0)
    model = agent.model
    assert type(model).__name__ == "ChatOpenAI"
    assert (model.model_name, model.max_retries, model.request_timeout) == ("gpt-4o-mini", 0, 7.0)
    assert model.openai_api_key.get_secret_value() == SECRET
    assert SECRET not in repr(model) and SECRET not in repr(agent)


def test_environment_variable_names_the_default_model(monkeypatch):
    monkeypatch.setenv("LOSSAGENT_LLM", "openai:gpt-4.1-nano")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    agent = LLMAgent()
    agent.reset(_spec(), seed=0)
    assert agent.model_name == "gpt-4.1-nano"


def test_bare_model_name_needs_a_base_url(monkeypatch):
    monkeypatch.delenv("LOSSAGENT_LLM_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="model='qwen2.5'.*base_url"):
        resolve_chat_model("qwen2.5")
    model = resolve_chat_model("qwen2.5", base_url="http://127.0.0.1:9/v1", timeout=3.0)
    assert type(model).__name__ == "ChatOpenAI"
    assert (model.openai_api_base, model.max_retries, model.use_responses_api) == ("http://127.0.0.1:9/v1", 0, False)
    with pytest.raises(TypeError, match="BaseChatModel"):
        resolve_chat_model(42)


def test_the_local_model_is_not_imported_by_the_package():
    code = "import sys, agents.llm; print('lossagent_env.chat.local' in sys.modules, 'llama_cpp' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "False False", out.stderr


def _spec():
    from agents.base import AgentSpec

    return AgentSpec.from_env(ToyLossEnv())
