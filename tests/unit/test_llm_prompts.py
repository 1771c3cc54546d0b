"""The LLM agent's prompt (three parts, snapshots) and its answer schema.

Snapshots live in ``tests/unit/snapshots/``; rewrite them with ``UPDATE_SNAPSHOTS=1``
after a deliberate prompt change, and review the diff.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage, SystemMessage
from pydantic import ValidationError

from agents.base import AgentSpec
from agents.llm import LLMAgent, make_answer_schema, validate_answer
from agents.llm.prompts import HistoryRecord, estimate_tokens, render_history, render_parts
from tests.fake_chat import ScriptedChatModel, tool_message

SNAPSHOTS = Path(__file__).parent / "snapshots"

SPEC = AgentSpec(
    loss_names=("l1", "ssim", "gradient", "gan"),
    descriptions={
        "l1": "Mean absolute error between restored and target pixels. Robust and stable; "
        "favours PSNR but tends to give slightly smooth results.",
        "ssim": "One minus the structural similarity index. Preserves local structure and "
        "contrast; on its own it may shift colours.",
        "gradient": "Difference of the image gradients (edges). Sharpens edges; too much "
        "weight adds ringing.",
        "gan": "Adversarial loss against a patch discriminator trained alongside. Adds "
        "realistic texture; unstable at high weight.",
    },
    scales={"l1": 1.0, "ssim": 0.5, "gradient": 1.0, "gan": 0.1},
    objective="Sharp, faithful super-resolution: maximise PSNR (higher is better) while "
    "keeping LPIPS low (lower is better).",
    metric_names=("psnr", "lpips"),
    lower_better={"psnr": False, "lpips": True},
    max_stages=5,
    stage_iters=20,
    task="super-resolution (undo bicubic down-sampling)",
)

HISTORY = [
    HistoryRecord(0, None, {"psnr": 24.1, "lpips": 0.41}, 19.99),
    HistoryRecord(1, (1.0, 0.0, 0.0, 0.0), {"psnr": 25.3, "lpips": 0.38}, 21.5, 1.51),
    HistoryRecord(2, (0.5, 0.5, 0.25, 0.0), {"psnr": 25.9, "lpips": 0.33}, 22.6, 1.1),
    HistoryRecord(
        3, (0.5, 0.5, 0.5, 0.2), {"psnr": 25.7, "lpips": 0.29}, 22.8, 0.2,
        feedback="Edges are crisp now, but the fur looks noisy.",
    ),
]


def _check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    assert path.exists(), f"Snapshot {path} is missing; run with UPDATE_SNAPSHOTS=1 to write it."
    assert text + "\n" == path.read_text(encoding="utf-8"), (
        f"The rendered prompt differs from {path}. If the change is deliberate, rerun with "
        "UPDATE_SNAPSHOTS=1 and review the diff."
    )


def _tool_reply(args: dict) -> AIMessage:
    return tool_message("LossWeights", args, id="call_0")


# ---------------------------------------------------------------- snapshots
def test_snapshot_of_the_three_parts():
    schema = make_answer_schema(SPEC.loss_names, SPEC.descriptions)
    parts = render_parts(SPEC, HISTORY, method="function_calling", schema=schema)
    _check_snapshot("llm_prompt_system.txt", parts.system)
    _check_snapshot("llm_prompt_objective.txt", parts.objective)
    _check_snapshot("llm_prompt_history.txt", parts.history)
    _check_snapshot("llm_prompt_format.txt", parts.format)


def test_snapshot_of_sorted_history_and_text_format():
    schema = make_answer_schema(SPEC.loss_names, SPEC.descriptions)
    parts = render_parts(SPEC, HISTORY, method="text", schema=schema, order="sorted")
    _check_snapshot("llm_prompt_history_sorted.txt", parts.history)
    _check_snapshot("llm_prompt_format_text.txt", parts.format)


# ---------------------------------------------------------------- content
def test_the_prompt_sent_holds_descriptions_objective_and_the_table():
    model = ScriptedChatModel(messages=iter([_tool_reply({"l1": 0.5, "ssim": 0.5, "gradient": 0.1, "gan": 0.0})]))
    agent = LLMAgent(model)
    agent.reset(SPEC, seed=0)
    for record in HISTORY[1:]:
        info = {"metrics": dict(record.metrics), "objective": record.objective, "stage": record.stage}
        if record.feedback:
            info["feedback"] = record.feedback
        if not agent.records:
            agent._record_start({"metrics": dict(HISTORY[0].metrics), "objective": HISTORY[0].objective, "stage": 0})
        agent.observe(np.array(record.weights, np.float32), record.reward, {}, info, False, False)
        agent.t = record.stage
    agent.act({}, {"metrics": {"psnr": 25.7, "lpips": 0.29}, "objective": 22.8, "stage": 3})
    sent = model.seen[0]
    assert isinstance(sent[0], SystemMessage) and len(sent) == 2
    system, user = sent[0].content, sent[1].content
    for loss, description in SPEC.descriptions.items():
        assert description in system
        assert f"| {loss} |" in system
    # the objective opens the user message: the system message is the same for every objective
    assert SPEC.objective not in system and user.startswith("## Optimisation objective\n" + SPEC.objective)
    assert "| lpips | lower |" in user and "| psnr | higher |" in user
    assert "| stage | weights (l1, ssim, gradient, gan) | metrics | objective J | reward |" in user
    assert "| 2 | 0.50 0.50 0.25 0.00 | psnr=25.9 lpips=0.33 | 22.6 | +1.1 |" in user
    assert "| 0 | (start) | psnr=24.1 lpips=0.41 | 19.99 | - |" in user
    assert "after stage 3: Edges are crisp now, but the fur looks noisy." in user
    assert user.endswith("Next: stage 4 of 5.")
    assert "Call the function `LossWeights`" in user


def test_sorted_history_is_ascending_by_objective():
    records = HISTORY[:1] + [
        HistoryRecord(1, (1.0, 0, 0, 0), {"psnr": 25.0, "lpips": 0.3}, 22.0, 2.0),
        HistoryRecord(2, (0.0, 1, 0, 0), {"psnr": 24.0, "lpips": 0.4}, 20.0, -2.0),
        HistoryRecord(3, (0.0, 0, 1, 0), {"psnr": 26.0, "lpips": 0.3}, 23.0, 3.0),
    ]
    text = render_history(SPEC, records, order="sorted")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "(start)" not in line][1:]
    assert [row.split("|")[1].strip() for row in rows] == ["2", "1", "3"]
    assert "best last" in text
    with pytest.raises(ValueError, match="history='random'"):
        render_history(SPEC, records, order="random")


def test_history_is_trimmed_oldest_first_to_the_token_budget():
    records = HISTORY[:1] + [
        HistoryRecord(k, (0.5, 0.5, 0.5, 0.5), {"psnr": 24 + k / 10, "lpips": 0.3}, 20 + k / 10, 0.1)
        for k in range(1, 41)
    ]
    full = render_history(SPEC, records)
    assert "not shown" not in full
    budget = estimate_tokens(full) // 3
    trimmed = render_history(SPEC, records, max_tokens=budget)
    assert estimate_tokens(trimmed) <= budget
    stages = [int(line.split("|")[1]) for line in trimmed.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    kept = [s for s in stages if s > 0]
    assert kept == list(range(41 - len(kept), 41))  # the newest, contiguous
    assert 0 in stages  # the start row stays
    assert f"({40 - len(kept)} earlier stages not shown.)" in trimmed
    tiny = render_history(SPEC, records, max_tokens=1)
    assert "| 40 |" in tiny and "| 39 |" not in tiny  # the latest stage is always kept


# ---------------------------------------------------------------- schema
def test_schema_has_a_described_bounded_required_field_per_loss():
    schema = make_answer_schema(("l1", "iqa:lpips", "ms_ssim"), {"l1": "Mean absolute error. More."})
    js = schema.model_json_schema()
    assert set(js["properties"]) == {"l1", "iqa:lpips", "ms_ssim", "rationale"}
    assert js["required"] == ["l1", "iqa:lpips", "ms_ssim", "rationale"]
    for name in ("l1", "iqa:lpips", "ms_ssim"):
        prop = js["properties"][name]
        assert (prop["type"], prop["minimum"], prop["maximum"]) == ("number", 0.0, 1.0)
        assert "default" not in prop and "between 0 and 1" in prop["description"]
    assert js["properties"]["l1"]["description"].endswith("Mean absolute error.")
    answer = schema.model_validate({"l1": 0.2, "iqa:lpips": 0.7})
    action, corrections, _ = validate_answer(answer, ("l1", "iqa:lpips", "ms_ssim"), None)
    np.testing.assert_allclose(action, [0.2, 0.7, 0.5])
    assert corrections == [{"loss": "ms_ssim", "kind": "filled", "value": None, "to": 0.5}]
    with pytest.raises(ValidationError, match="finite"):
        schema.model_validate({"l1": math.nan})
    with pytest.raises(ValidationError):
        schema.model_validate_json('{"l1": Infinity}')


def test_validate_answer_clips_fills_and_counts():
    schema = make_answer_schema(SPEC.loss_names)
    answer = schema.model_validate({"l1": 1.7, "ssim": -0.2, "gradient": 0.3, "rationale": "why"})
    previous = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    action, corrections, rationale = validate_answer(answer, SPEC.loss_names, previous)
    np.testing.assert_allclose(action, [1.0, 0.0, 0.3, 0.4], rtol=1e-6)
    assert rationale == "why"
    assert [(c["loss"], c["kind"]) for c in corrections] == [("l1", "clipped"), ("ssim", "clipped"), ("gan", "filled")]
    assert corrections[0]["value"] == 1.7 and corrections[3 - 1]["to"] == pytest.approx(0.4)
    json.dumps(corrections)


# ---------------------------------------------------------------- prefix reuse
def _sent_text(model: ScriptedChatModel, k: int) -> str:
    return "\n".join(str(m.content) for m in model.seen[k])


def test_each_decision_extends_the_previous_prompt_up_to_the_progress_line():
    """Servers that reuse the longest common prefix (llama.cpp) evaluate only the new row."""
    replies = iter([_tool_reply({"l1": 0.5, "ssim": 0.5, "gradient": 0.1, "gan": 0.0, "rationale": "r"})] * 3)
    model = ScriptedChatModel(messages=replies)
    agent = LLMAgent(model)
    agent.reset(SPEC, seed=0)
    info = {"metrics": dict(HISTORY[0].metrics), "objective": HISTORY[0].objective, "stage": 0}
    for record in HISTORY[1:3]:
        action = agent.act({}, info)
        info = {"metrics": dict(record.metrics), "objective": record.objective, "stage": record.stage}
        agent.observe(action, record.reward, {}, info, False, False)
    agent.act({}, info)
    for k in (1, 2):
        before, after = _sent_text(model, k - 1), _sent_text(model, k)
        shared = before[: before.index(f"\n\nNext: stage {k} of 5.")]
        assert after.startswith(shared)
        new = after[len(shared):]
        assert new.count("\n| ") == 1 and new.endswith(f"Next: stage {k + 1} of 5.")
        assert "## Your answer" not in new and "## Loss repository" not in new


def test_the_schema_names_the_losses_once_and_caps_the_rationale():
    model = ScriptedChatModel(messages=iter([]))
    agent = LLMAgent(model, rationale_chars=80)
    agent.reset(SPEC, seed=0)
    js = agent._schema.model_json_schema()
    assert js["properties"]["rationale"]["maxLength"] == 80
    assert js["properties"]["rationale"]["minLength"] == 1  # the grammar forbids an empty one
    for loss, description in SPEC.descriptions.items():
        assert description.split(".")[0] not in js["properties"][loss]["description"]
        assert f"'{loss}'" in js["properties"][loss]["description"]
    system = agent.messages()[0].content
    for description in SPEC.descriptions.values():
        assert system.count(description) == 1
    for bad in (0, -5, 2.5, True, "80"):
        with pytest.raises(ValueError, match=f"rationale_chars={bad!r}"):
            LLMAgent(model, rationale_chars=bad)


def test_objectives_share_the_system_message():
    """A prefix-caching server evaluates the system message (and the tool schema it may
    append to it) once for every objective of a benchmark."""
    import dataclasses

    schema = make_answer_schema(SPEC.loss_names, SPEC.descriptions)
    other = dataclasses.replace(SPEC, objective="Maximise SSIM.", metric_names=("ssim",), lower_better={"ssim": False})
    first = render_parts(SPEC, HISTORY[:2], method="function_calling", schema=schema)
    second = render_parts(other, HISTORY[:2], method="function_calling", schema=schema)
    assert first.system == second.system
    assert first.objective != second.objective and "Maximise SSIM." in second.objective
