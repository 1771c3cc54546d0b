"""TextObjective in judge mode through the real ``langchain_openai.ChatOpenAI`` over HTTP.

A loopback server (stdlib ``http.server`` on 127.0.0.1, port 0) speaks
``/v1/chat/completions`` and answers from a script. The test reads the request bodies
the judge sent (the description and the images as base64 PNG ``image_url`` parts), checks
the score becomes ``info["objective"]``, that the critique reaches the LLM agent's next
history prompt, and that a judge answering garbage makes the stage missing (NaN, reward
0) while the episode goes on.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gymnasium as gym
import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from PIL import Image
from pydantic import Field
from typing_extensions import Self

import lossagent_env  # noqa: F401  (registers the env ids)
from agents import run_episode
from agents.llm import LLMAgent
from lossagent_env.objectives import TextObjective

langchain_openai = pytest.importorskip("langchain_openai")

DESCRIPTION = "crisp cat fur, no ringing around edges"


def verdict(score: float, critique: str) -> dict:
    return {"arguments": json.dumps({"score": score, "critique": critique})}


class JudgeServer:
    """An OpenAI-compatible endpoint replying with scripted ``JudgeAnswer`` tool calls."""

    def __init__(self, script: list[dict]):
        self.script = list(script)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    step = (
                        server.script.pop(0)
                        if server.script
                        else {"content": "script exhausted"}
                    )
                if "status" in step:
                    data = json.dumps(
                        {"error": {"message": "overloaded", "type": "server_error"}}
                    ).encode()
                    self.send_response(step["status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                message: dict = {"role": "assistant", "content": step.get("content")}
                if "arguments" in step:
                    message["tool_calls"] = [
                        {
                            "id": f"call_{len(server.requests)}",
                            "type": "function",
                            "function": {
                                "name": "JudgeAnswer",
                                "arguments": step["arguments"],
                            },
                        }
                    ]
                payload = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": body.get("model", "judge"),
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": 5,
                        "total_tokens": 15,
                    },
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args):
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def judge_model(server: JudgeServer):
    return langchain_openai.ChatOpenAI(
        model="judge-model",
        base_url=server.base_url,
        api_key="not-a-key",
        max_retries=0,
        timeout=10,
        use_responses_api=False,
    )


class ScriptedAgentModel(GenericFakeChatModel):
    """The LLM agent's model: always the same weights; records each request."""

    seen: list = Field(default_factory=list)

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def _images(body: dict) -> list[str]:
    parts = body["messages"][-1]["content"]
    return [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]


def _png(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    data = base64.b64decode(url[len(prefix) :])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


def test_judge_request_carries_images_and_description(tiny_kwargs):
    with JudgeServer(
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
    body = server.requests[1]
    assert body["tools"][0]["function"]["name"] == "JudgeAnswer"
    texts = " ".join(
        p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text"
    )
    assert DESCRIPTION in texts
    urls = _images(body)
    assert len(urls) == 4  # 2 images x (restored, degraded)
    size = tiny_kwargs["eval_size"]
    assert _png(urls[0]).size == (size, size) and _png(urls[0]).mode == "RGB"
    assert _png(urls[1]).size == (size // 2, size // 2)  # the x2 down-sampled input


def test_critique_reaches_the_agent_prompt_and_bad_answers_make_a_missing_stage(
    tiny_kwargs,
):
    script = [
        verdict(3.0, "Everything is blurry."),
        {"status": 500},  # a server error is a failed try, asked again
        verdict(5.0, "Edges improved but fur is smeared."),
        {"content": "I think it is about a seven."},  # no tool call
        {"arguments": '{"score": 7, "critique": '},  # broken JSON
        verdict(12.0, "over the top"),  # out of range
    ]
    with JudgeServer(script) as server:
        objective = TextObjective(
            DESCRIPTION, judge=judge_model(server), max_retries=2, images=1
        )
        env = gym.make(
            "LossAgent/SuperResolution-v0",
            **{**tiny_kwargs, "max_stages": 2, "objective": objective},
        )
        names = env.unwrapped.loss_names
        answer = {name: 0.5 for name in names} | {"rationale": "balanced"}
        reply = AIMessage(
            "", tool_calls=[{"name": "LossWeights", "args": answer, "id": "c"}]
        )
        model = ScriptedAgentModel(messages=iter([reply, reply]))
        traj = run_episode(env, LLMAgent(model), seed=0)

    assert len(server.requests) == 6
    assert next(s.objective for s in traj.stages) == 5.0
    assert math.isnan(traj.stages[1].objective) and traj.stages[1].reward == 0.0
    assert objective.failures == 1 and objective.retries == 3
    # The request before stage 1 shows the critique of stage 0; before stage 2 also stage 1's.
    first, second = (
        "\n".join(str(m.content) for m in request) for request in model.seen
    )
    assert "Everything is blurry." in first and "Edges improved" not in first
    assert "Edges improved but fur is smeared." in second
