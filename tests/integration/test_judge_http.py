"""TextObjective in judge mode through the real ``langchain_openai.ChatOpenAI`` over HTTP.

A loopback server (stdlib ``http.server`` on 127.0.0.1, port 0) speaks
``/v1/chat/completions`` and answers from a script. The test reads the request bodies
the judge sent (the description and the images as base64 PNG ``image_url`` parts), checks
the score becomes ``info["objective"]``, that the critique reaches the LLM agent's next
history prompt, and that a judge answering garbage makes the stage missing (NaN, reward
0) while the episode goes on.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import lossagent_env  # noqa: F401  (registers the env ids)
from agents import run_episode
from agents.llm import LLMAgent
from lossagent_env.objectives import TextObjective
from tests.fake_chat import ScriptedChatModel, png_from_data_url, tool_message
from tests.openai_stub import ScriptedServer, content, status, tool_call

langchain_openai = pytest.importorskip("langchain_openai")

DESCRIPTION = "crisp cat fur, no ringing around edges"


def verdict(score: float, critique: str) -> dict:
    return tool_call({"score": score, "critique": critique})


def judge_server(script: list[dict]) -> ScriptedServer:
    """An OpenAI-compatible endpoint replying with scripted ``JudgeAnswer`` tool calls."""
    return ScriptedServer(script, tool_name="JudgeAnswer")


def judge_model(server: ScriptedServer):
    return langchain_openai.ChatOpenAI(
        model="judge-model",
        base_url=server.base_url,
        api_key="not-a-key",
        max_retries=0,
        timeout=10,
        use_responses_api=False,
    )


def _images(body: dict) -> list[str]:
    parts = body["messages"][-1]["content"]
    return [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]


def test_judge_request_carries_images_and_description(tiny_kwargs):
    with judge_server(
        [verdict(4.0, "soft fur"), verdict(6.5, "fur sharper, slight ringing")]
    ) as server:
        objective = TextObjective(DESCRIPTION, judge=judge_model(server), images=2)
        env = gym.make(
            "LossAgent/SuperResolution-v0", **{**tiny_kwargs, "objective": objective}
        )
        _, info = env.reset(seed=0)
        assert info["objective"] == 4.0 and info["feedback"] == "soft fur"
        _, reward, *_, info = env.step(np.full(env.action_space.shape, 0.5, np.float32))
        assert info["objective"] == 6.5 and info["metrics"] == {"text_judge": 6.5}
        assert (
            reward == pytest.approx(2.5)
            and info["feedback"] == "fur sharper, slight ringing"
        )

    assert len(server.requests) == 2
    body = server.bodies[1]
    assert body["tools"][0]["function"]["name"] == "JudgeAnswer"
    texts = " ".join(
        p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text"
    )
    assert DESCRIPTION in texts
    urls = _images(body)
    assert len(urls) == 4  # 2 images x (restored, degraded)
    size = tiny_kwargs["eval_size"]
    first = png_from_data_url(urls[0])
    assert first.size == (size, size) and first.mode == "RGB"
    assert png_from_data_url(urls[1]).size == (size // 2, size // 2)  # the x2 down-sampled input


def test_critique_reaches_the_agent_prompt_and_bad_answers_make_a_missing_stage(
    tiny_kwargs,
):
    script = [
        verdict(3.0, "Everything is blurry."),
        status(500, "overloaded"),  # a server error is retried after a pause
        verdict(5.0, "Edges improved but fur is smeared."),
        content("I think it is about a seven."),  # no tool call
        tool_call('{"score": 7, "critique": '),  # broken JSON
        verdict(12.0, "over the top"),  # out of range
    ]
    with judge_server(script) as server:
        objective = TextObjective(
            DESCRIPTION, judge=judge_model(server), max_retries=2, images=1
        )
        env = gym.make(
            "LossAgent/SuperResolution-v0",
            **{**tiny_kwargs, "max_stages": 2, "objective": objective},
        )
        names = env.unwrapped.loss_names
        answer = dict.fromkeys(names, 0.5) | {"rationale": "balanced"}
        reply = tool_message("LossWeights", answer)
        model = ScriptedChatModel(messages=iter([reply, reply]))
        traj = run_episode(env, LLMAgent(model), seed=0)

    assert len(server.requests) == 6
    assert next(s.objective for s in traj.stages) == 5.0
    assert math.isnan(traj.stages[1].objective) and traj.stages[1].reward == 0.0
    assert objective.failures == 1 and objective.retries == 2 and objective.transport_retries == 1
    # The request before stage 1 shows the critique of stage 0; before stage 2 also stage 1's.
    first, second = (
        "\n".join(str(m.content) for m in request) for request in model.seen
    )
    assert "Everything is blurry." in first and "Edges improved" not in first
    assert "Edges improved but fur is smeared." in second
