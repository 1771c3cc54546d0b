"""LLMAgent through the real ``langchain_openai.ChatOpenAI`` over a real HTTP socket.

A loopback server (stdlib ``http.server`` on 127.0.0.1, port 0) speaks
``/v1/chat/completions`` in the OpenAI response format and replies from a scripted
queue: valid answers, malformed JSON in the tool arguments, missing keys, out-of-range
values, HTTP 429 and 500, and a reply slower than the client timeout. The episode must
complete with exactly the expected counts of re-asks, corrections, transport retries and
fallbacks, and the API key must leak into no log record, trajectory or file.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from agents import Trajectory, run_episode
from agents.llm import LLMAgent
from tests.openai_stub import ScriptedServer, content, delayed, status, tool_call
from tests.toy_env import ToyLossEnv

SECRET = "sk-test-SECRET-9f8e7d6c5b4a-do-not-log"
VALID = {"l1": 0.8, "ssim": 0.5, "gradient": 0.2, "gan": 0.0, "rationale": "start with pixels"}
CLIENT_TIMEOUT = 0.5


def slow(seconds: float) -> dict:
    return delayed(seconds, tool_call(VALID))


def _agent(server: ScriptedServer, monkeypatch, **kwargs) -> LLMAgent:
    monkeypatch.setenv("LOSSAGENT_TEST_KEY", SECRET)
    options = dict(
        base_url=server.base_url,
        api_key_env="LOSSAGENT_TEST_KEY",
        timeout=CLIENT_TIMEOUT,
        max_retries=2,
        transport_retries=2,
        backoff_base=0.01,
    )
    options.update(kwargs)
    return LLMAgent("test-model", **options)


def _totals(traj: Trajectory) -> dict[str, int]:
    notes = [s.notes for s in traj.stages]
    return {
        "retries": sum(n["retries"] for n in notes),
        "corrections": sum(len(n["corrections"]) for n in notes),
        "transport_retries": sum(n["transport_retries"] for n in notes),
        "fallbacks": sum(bool(n["fallback"]) for n in notes),
    }


def _assert_no_leak(caplog, traj: Trajectory, tmp_path) -> None:
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.name
        assert SECRET not in str(record.args), record.name
    text = json.dumps(traj.to_dict())
    assert SECRET not in text
    path = tmp_path / "trajectory.json"
    path.write_text(text)
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file


def test_function_calling_episode_counts_every_retry_correction_and_fallback(monkeypatch, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    script = [
        # stage 1: a valid answer
        tool_call(VALID),
        # stage 2: malformed JSON in the tool arguments, then an answer with missing keys
        tool_call('{"l1": 0.7, "ssim": '),
        tool_call({"l1": 0.6, "rationale": "only l1 this time"}),
        # stage 3: out-of-range values
        tool_call({"l1": 1.4, "ssim": -0.1, "gradient": 0.5, "gan": 2.0, "rationale": "bold"}),
        # stage 4: HTTP 429, HTTP 500, then a valid answer
        status(429, "Rate limit reached"),
        status(500, "Internal error"),
        tool_call({**VALID, "gan": 0.05}),
        # stage 5: three replies slower than the client timeout -> fallback
        slow(CLIENT_TIMEOUT * 2),
        slow(CLIENT_TIMEOUT * 2),
        slow(CLIENT_TIMEOUT * 2),
        # stage 6: three malformed answers (bad JSON, plain text, bad JSON) -> fallback
        tool_call("{not json"),
        content("I think l1 should be high."),
        tool_call('{"l1": 0.5'),
    ]
    with ScriptedServer(script) as server:
        agent = _agent(server, monkeypatch)
        traj = run_episode(ToyLossEnv(max_stages=6), agent, seed=0)

    assert len(traj) == 6
    assert not server.script, "every scripted reply was requested"
    assert len(server.requests) == 13
    assert all(r["path"] == "/v1/chat/completions" for r in server.requests)
    assert all(r["body"]["tool_choice"]["function"]["name"] == "LossWeights" for r in server.requests)
    # The server saw the key (that is how it is sent); nothing else did.
    assert all(a == f"Bearer {SECRET}" for a in server.authorization)

    per_stage = [
        (n["retries"], len(n["corrections"]), n["transport_retries"], n["fallback"])
        for n in (s.notes for s in traj.stages)
    ]
    assert per_stage == [
        (0, 0, 0, False),
        (1, 3, 0, False),
        (0, 3, 0, False),
        (0, 0, 2, False),
        (0, 0, 2, True),
        (2, 0, 0, True),
    ]
    assert _totals(traj) == {"retries": 3, "corrections": 6, "transport_retries": 4, "fallbacks": 2}

    actions = traj.actions
    np.testing.assert_allclose(actions[0], [0.8, 0.5, 0.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(actions[1], [0.6, 0.5, 0.2, 0.0], rtol=1e-6)  # filled from stage 1
    np.testing.assert_allclose(actions[2], [1.0, 0.0, 0.5, 1.0], rtol=1e-6)  # clipped
    np.testing.assert_allclose(actions[3], [0.8, 0.5, 0.2, 0.05], rtol=1e-6)
    np.testing.assert_array_equal(actions[4], actions[3])  # fallback: previous weights
    np.testing.assert_array_equal(actions[5], actions[4])

    notes = traj.stages[1].notes
    assert [c["kind"] for c in notes["corrections"]] == ["filled"] * 3
    assert notes["rationale"] == "only l1 this time"
    assert (notes["prompt_tokens"], notes["completion_tokens"]) == (240, 60)
    assert traj.stages[3].notes["prompt_tokens"] == 120  # failed requests bring no usage
    assert traj.stages[4].notes["prompt_tokens"] is None
    assert notes["model"] == "test-model"
    # The re-ask carries the error and the previous answer.
    reask = server.requests[2]["body"]["messages"][-1]["content"]
    assert "not valid JSON" in reask and '{"l1": 0.7, "ssim": ' in reask
    # The history of later prompts shows the earlier stages.
    last_prompt = server.requests[-1]["body"]["messages"][1]["content"]
    assert "| 4 | 0.80 0.50 0.20 0.05 |" in last_prompt

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "agents.llm.agent"]
    assert sum("asking again" in m for m in warnings) == 3
    assert sum("retrying in" in m for m in warnings) == 4
    assert sum("falling back" in m for m in warnings) == 2
    _assert_no_leak(caplog, traj, tmp_path)


def test_json_schema_method(monkeypatch, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    script = [content(json.dumps(VALID)), content('{"l1": 0.3, '), content(json.dumps({**VALID, "l1": 0.3}))]
    with ScriptedServer(script) as server:
        traj = run_episode(ToyLossEnv(max_stages=2), _agent(server, monkeypatch, method="json_schema"), seed=0)
    body = server.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]["schema"]
    assert set(schema["required"]) == {"l1", "ssim", "gradient", "gan", "rationale"}
    assert "tools" not in body
    assert _totals(traj) == {"retries": 1, "corrections": 0, "transport_retries": 0, "fallbacks": 0}
    np.testing.assert_allclose(traj.actions[1], [0.3, 0.5, 0.2, 0.0], rtol=1e-6)
    _assert_no_leak(caplog, traj, tmp_path)


def test_text_method(monkeypatch, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    fenced = "Here are my weights:\n```json\n" + json.dumps({**VALID, "gan": 1.5}) + "\n```"
    script = [content(fenced), content("I would raise l1."), content(json.dumps(VALID))]
    with ScriptedServer(script) as server:
        traj = run_episode(ToyLossEnv(max_stages=2), _agent(server, monkeypatch, method="text"), seed=0)
    body = server.requests[0]["body"]
    assert "tools" not in body and "response_format" not in body
    assert "JSON schema" in body["messages"][1]["content"]
    assert _totals(traj) == {"retries": 1, "corrections": 1, "transport_retries": 0, "fallbacks": 0}
    np.testing.assert_allclose(traj.actions[0], [0.8, 0.5, 0.2, 1.0], rtol=1e-6)
    _assert_no_leak(caplog, traj, tmp_path)


def test_wrong_key_falls_back_without_retrying(monkeypatch, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    script = [status(401, f"Incorrect API key provided: {SECRET}")]
    with ScriptedServer(script) as server:
        traj = run_episode(ToyLossEnv(max_stages=1), _agent(server, monkeypatch), seed=0)
    assert len(server.requests) == 1
    assert _totals(traj) == {"retries": 0, "corrections": 0, "transport_retries": 0, "fallbacks": 1}
    assert "***" in traj.stages[0].notes["errors"][0]
    _assert_no_leak(caplog, traj, tmp_path)


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_requests_use_chat_completions_with_the_prompt(monkeypatch, method):
    reply = tool_call(VALID) if method == "function_calling" else content(json.dumps(VALID))
    with ScriptedServer([reply]) as server:
        run_episode(ToyLossEnv(max_stages=1), _agent(server, monkeypatch, method=method), seed=0)
    messages = server.requests[0]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Loss repository" in messages[0]["content"] and "## History" in messages[1]["content"]
    assert server.requests[0]["body"]["model"] == "test-model"
