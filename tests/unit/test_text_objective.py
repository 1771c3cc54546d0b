"""TextObjective: judge and translate modes with scripted LangChain chat models."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from langchain_core.messages import AIMessage

import lossagent_env  # noqa: F401  (registers the env ids)
from lossagent_env.metrics import metric_info, usable_metrics
from lossagent_env.objectives import TextObjective, make_objective
from lossagent_env.objectives.text import (
    DEFAULT_MIX,
    JUDGE_METRIC,
    JudgeAnswer,
    encode_png,
)
from tests.fake_chat import ScriptedChatModel, png_from_data_url, tool_message


def judged(score, critique="fine") -> AIMessage:
    return tool_message("JudgeAnswer", {"score": score, "critique": critique})


def mix(*terms) -> AIMessage:
    return tool_message("MetricMix", {"terms": [{"metric": m, "weight": w} for m, w in terms]})


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 24, 20, generator=gen)
    restored = (target + 0.05 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    degraded = target[:, :, ::2, ::2]
    return restored, target, degraded


def _png_size(url: str) -> tuple[int, int]:
    return png_from_data_url(url).size


# ------------------------------------------------------------------- judge
def test_judge_score_is_the_objective_and_critique_the_feedback(batch):
    restored, target, degraded = batch
    model = ScriptedChatModel(
        messages=iter([judged(7.5, "Edges are sharp;\n fur lacks detail.")])
    )
    objective = TextObjective("sharp fur, no ringing", judge=model, images=2)
    objective.setup("cpu")
    result = objective.evaluate(restored, target, degraded=degraded, stage=1)
    assert result.value == 7.5 and result.metrics == {JUDGE_METRIC: 7.5}
    assert result.feedback == "Edges are sharp; fur lacks detail."
    assert objective.metric_names == (JUDGE_METRIC,) and objective.bounds[
        JUDGE_METRIC
    ] == (0.0, 10.0)

    (request,) = model.seen
    parts = request[-1].content
    assert "sharp fur, no ringing" in parts[0]["text"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 4  # 2 images x (restored, degraded)
    assert _png_size(urls[0]) == (20, 24) and _png_size(urls[1]) == (10, 12)
    decoded = np.asarray(png_from_data_url(urls[0]))
    expected = (restored[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(decoded, expected)


def test_malformed_answers_are_retried(batch):
    restored, target, degraded = batch
    bad = AIMessage(
        "",
        invalid_tool_calls=[
            {"name": "JudgeAnswer", "args": '{"score": ', "id": "c", "error": "json"}
        ],
    )
    model = ScriptedChatModel(messages=iter([bad, judged(42.0), judged(6.0, "ok")]))
    objective = TextObjective("clean", judge=model, max_retries=2)
    result = objective.evaluate(restored, target, degraded=degraded)
    assert result.value == 6.0 and objective.retries == 2 and objective.failures == 0
    assert "rejected" in model.seen[-1][-1].content


def test_judge_that_keeps_failing_gives_a_missing_stage(batch, caplog):
    restored, target, _ = batch
    model = ScriptedChatModel(messages=iter([AIMessage("no tool call")] * 3))
    objective = TextObjective("clean", judge=model, max_retries=1)
    result = objective.evaluate(restored, target)
    assert math.isnan(result.value) and math.isnan(result.metrics[JUDGE_METRIC])
    assert result.feedback is None
    assert objective.failures == 1 and objective.retries == 1 and len(model.seen) == 2
    assert "objective is missing (NaN)" in caplog.text


def test_env_with_judge_reports_score_feedback_and_survives_a_failed_stage(tiny_kwargs):
    script = [
        judged(3.0, "blurry"),
        judged(5.0, "better edges"),
        AIMessage("x"),
        AIMessage("y"),
        judged(6.0, "good"),
    ]
    model = ScriptedChatModel(messages=iter(script))
    objective = TextObjective("sharp edges", judge=model, max_retries=1, images=1)
    env = gym.make(
        "LossAgent/SuperResolution-v0", **{**tiny_kwargs, "objective": objective}
    )
    _, info = env.reset(seed=0)
    assert info["objective"] == 3.0 and info["feedback"] == "blurry"
    action = np.full(env.action_space.shape, 0.5, np.float32)
    _, reward, *_, info = env.step(action)
    assert (
        info["objective"] == 5.0
        and reward == pytest.approx(2.0)
        and info["feedback"] == "better edges"
    )
    obs, reward, *_, info = env.step(action)
    assert math.isnan(info["objective"]) and reward == 0.0 and "feedback" not in info
    assert env.observation_space.contains(obs)
    _, reward, *_, info = env.step(action)
    assert info["objective"] == 6.0 and reward == pytest.approx(1.0)
    assert objective.failures == 1


def test_judge_answer_schema_bounds():
    with pytest.raises(ValueError):
        JudgeAnswer(score=11, critique="x")
    assert JudgeAnswer(score=0, critique="x").score == 0


def test_encode_png_refuses_a_batch():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        encode_png(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "guess", "judge": "x"}, "mode='guess'"),
        ({}, "needs judge="),
        ({"judge": "x", "max_retries": -1}, "max_retries=-1"),
        ({"judge": "x", "images": 0}, "images=0"),
        ({"judge": "x", "method": "xml"}, "method='xml'"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TextObjective("clean", **kwargs)


def test_retry_settings_are_checked_by_the_one_schema_the_agent_uses():
    """The objective and the LLM agent check their retry arguments with RetrySettings,
    once, and the chat is built with what was checked (it checks nothing itself)."""
    from agents.llm.agent import LLMAgent
    from lossagent_env.chat import RetrySettings

    objective = TextObjective("clean", judge="x", method="text", max_retries=4, backoff_base=0.25)
    assert objective.settings == RetrySettings(method="text", max_retries=4, transport_retries=2, backoff_base=0.25)
    agent = LLMAgent("openai:x", method="json_schema", transport_retries=0)
    assert agent.settings == RetrySettings(method="json_schema", transport_retries=0)
    for build, owner in ((lambda **k: TextObjective("clean", judge="x", **k), "JudgeObjective"),
                         (lambda **k: LLMAgent("openai:x", **k), "LLMAgent")):
        with pytest.raises(ValueError, match=rf"^{owner}\(backoff_base=inf\): Input should be a finite number"):
            build(backoff_base=math.inf)
        with pytest.raises(ValueError, match=rf"^{owner}\(max_retries=True\): Input should be a valid integer"):
            build(max_retries=True)


# --------------------------------------------------------------- translate
def test_translate_keeps_known_metrics_and_reports_unknown_ones(batch):
    restored, target, _ = batch
    model = ScriptedChatModel(
        messages=iter([mix(("psnr", 3.0), ("sharpness9000", 5.0), ("ssim", 1.0))])
    )
    objective = TextObjective("faithful pixels", mode="translate", llm=model)
    objective.setup("cpu")
    assert objective.mix == pytest.approx({"psnr": 0.75, "ssim": 0.25})
    assert objective.dropped == ["sharpness9000"] and objective.fallback_reason is None
    assert objective.metric_names == ("psnr", "ssim")
    prompt = model.seen[0][0].content
    assert "faithful pixels" in prompt and "- psnr (higher is better" in prompt
    assert all(f"- {name} (" in prompt for name in objective.offered_metrics())
    result = objective.evaluate(restored, target)
    psnr, ssim = result.metrics["psnr"], result.metrics["ssim"]
    span = {m: metric_info(m).high - metric_info(m).low for m in ("psnr", "ssim")}
    assert result.value == pytest.approx(
        0.75 * psnr / span["psnr"] + 0.25 * ssim / span["ssim"]
    )
    assert (
        "sharpness9000" in objective.describe() and "psnr 0.75" in objective.describe()
    )


def test_translate_offers_only_usable_bounded_metrics():
    objective = TextObjective("x", mode="translate", llm="local")
    offered = objective.offered_metrics()
    assert offered and set(offered) <= set(usable_metrics())
    assert "mad" not in offered  # open-ended range: no scale


def test_invalid_translation_is_retried_then_falls_back(caplog):
    script = [mix(("psnr", -1.0)), mix(("nonsense", 1.0)), mix(("psnr", 0.0))]
    model = ScriptedChatModel(messages=iter(script))
    objective = TextObjective("whatever", mode="translate", llm=model, max_retries=2)
    objective.setup("cpu")
    assert objective.mix == DEFAULT_MIX and objective.retries == 2
    assert "invalid after 3 tries" in objective.fallback_reason
    assert objective.dropped == ["nonsense"]
    assert "default mix {'psnr': 1.0}" in objective.describe()
    assert "using the default mix" in caplog.text
    assert len(model.seen) == 3


def test_translation_happens_once(batch, tiny_kwargs):
    model = ScriptedChatModel(messages=iter([mix(("ssim", 1.0))]))
    objective = TextObjective("structure", mode="translate", llm=model)
    env = gym.make("LossAgent/Denoising-v0", **{**tiny_kwargs, "objective": objective})
    _, info = env.reset(seed=0)
    env.reset(seed=1)
    assert list(info["metrics"]) == ["ssim"] and len(model.seen) == 1
    assert info["objective"] == pytest.approx(info["metrics"]["ssim"])  # ssim span is 1


def test_make_objective_passes_text_objective_through():
    objective = TextObjective("x", judge="openai:gpt-4o-mini")
    assert make_objective(objective) is objective


def test_deep_copy_shares_the_model_and_copies_the_state():
    import copy

    model = ScriptedChatModel(messages=iter([mix(("ssim", 1.0))]))
    objective = TextObjective("structure", mode="translate", llm=model)
    objective.setup("cpu")
    twin = copy.deepcopy(objective)
    assert (
        twin.llm is model
        and twin.mix == objective.mix
        and twin.mix is not objective.mix
    )
