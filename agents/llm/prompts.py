"""The LLM agent's prompt, in the three parts of LossAgent (Li et al., 2024).

The system prompt (:data:`SYSTEM_TEMPLATE`, :data:`PRESET_SYSTEM_TEMPLATE` on a preset
env: role, loss repository, rules), then one user message: the objective
(:data:`OBJECTIVE_TEMPLATE`, with any example runs, :data:`EXAMPLES_TEMPLATE`), the
format (:data:`FORMAT_TEMPLATE`) and the history (:data:`HISTORY_TEMPLATE`), then any
re-ask messages. :data:`PROMPT` assembles them with LangChain's ``ChatPromptTemplate``;
each part is also a ``PromptTemplate`` of its own, so it can be rendered and reviewed
alone (see ``tests/unit/snapshots/``). See docs/agents.md ("The LLM agent") for what each
part holds and why they come in this order (a server's prefix cache).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from pydantic import BaseModel

from agents.base import AgentSpec
from agents.llm.schema import ANSWER_SCHEMA_NAME, PRESET_SCHEMA_NAME

__all__ = [
    "EXAMPLES_TEMPLATE",
    "FORMAT_TEMPLATE",
    "HISTORY_ORDERS",
    "HISTORY_TEMPLATE",
    "OBJECTIVE_TEMPLATE",
    "PROMPT",
    "SYSTEM_TEMPLATE",
    "ExampleRun",
    "HistoryRecord",
    "PromptParts",
    "build_messages",
    "estimate_tokens",
    "format_instructions",
    "render_examples",
    "render_history",
    "render_objective",
    "render_parts",
    "render_system",
]

HISTORY_ORDERS = ("chronological", "sorted")

SYSTEM_TEMPLATE = """\
You are LossAgent, an expert in training image-restoration networks. You choose the \
weights of the losses used to train a network for {task}. Training runs in \
{max_stages} stages of {stage_iters} iterations each. Before every stage you choose one \
weight per loss; the network then trains on the weighted sum of the losses, and the \
result is measured on held-out images.

## Loss repository
{loss_table}

## Rules
- Give exactly one weight per loss, for all {n_losses} losses: {loss_list}.
- Every weight is a number in [0, 1]. Training uses weight x scale; the scales make \
1.0 comparable across losses.
- A weight of 0 switches the loss off. If every weight is 0 the network does not train \
during that stage.
- Aim for the highest J at the end of training, not only after the next stage."""
"""The system prompt: everything that is the same for every objective."""

OBJECTIVE_TEMPLATE = """\
## Optimisation objective
{objective}

Metrics measured after every stage:
{metrics_table}

The objective value J combines these metrics (a lower-is-better metric enters J with a \
minus sign), so a higher J is always better. The reward of a stage is the change of J.{examples}"""
"""The objective, first in the user message (not in the system prompt as in LossAgent)."""

EXAMPLES_TEMPLATE = """

## Example runs on training problems
Whole runs with the same presets, stages and objective, on other images (so their J \
values are on another scale than yours): the preset of each stage, J at the start and \
J after the last stage.
{example_table}"""
"""The example trajectories an agent with an ``examples`` budget was given, after the
objective (empty without examples, so the prompt is then unchanged)."""

OTHER_OBJECTIVE_EXAMPLES_TEMPLATE = """

## Example runs on training problems
Whole runs with the same presets and stages on other images, under ANOTHER objective \
than yours: there J measured {example_objective}. They show what each preset did to \
that objective, not to yours: the preset of each stage, J at the start and J after the \
last stage.
{example_table}"""
"""Examples of the new-objective track: played under the objective the agent tuned on."""

PRESET_SYSTEM_TEMPLATE = """\
You are LossAgent, an expert in training image-restoration networks. You choose the \
losses used to train a network for {task}. Training runs in {max_stages} stages of \
{stage_iters} iterations each. Before every stage you choose one of {n_presets} presets \
(fixed weights of the losses); the network then trains on that weighted sum of the \
losses, and the result is measured on held-out images.

## Loss repository
{loss_table}

## Presets (weight of each loss; training uses weight x scale)
{preset_table}

## Rules
- Choose exactly one preset by its name: {preset_list}.
- You may choose a different preset at every stage.
- Aim for the highest J at the end of training, not only after the next stage."""
"""The system prompt on a preset env, again without the objective."""

HISTORY_TEMPLATE = """\
## History
{history_table}{feedback}

{progress}"""
"""The history: the table first and the progress line last (each prompt extends the last)."""

FORMAT_TEMPLATE = """\
## Your answer
{format_instructions}"""

SYSTEM_PROMPT = PromptTemplate.from_template(SYSTEM_TEMPLATE)
PRESET_SYSTEM_PROMPT = PromptTemplate.from_template(PRESET_SYSTEM_TEMPLATE)

HISTORY_PROMPT = PromptTemplate.from_template(HISTORY_TEMPLATE)
FORMAT_PROMPT = PromptTemplate.from_template(FORMAT_TEMPLATE)
OBJECTIVE_PROMPT = PromptTemplate.from_template(OBJECTIVE_TEMPLATE)

USER_TEMPLATE = OBJECTIVE_TEMPLATE + "\n\n" + FORMAT_TEMPLATE + "\n\n" + HISTORY_TEMPLATE
"""The user message: objective, format, history (what changes least comes first)."""


def _chat_prompt(system: str) -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages(
        [("system", system), ("human", USER_TEMPLATE), MessagesPlaceholder("reask", optional=True)]
    )


PROMPT = _chat_prompt(SYSTEM_TEMPLATE)
"""The whole prompt: system message, then objective + format + history as the user message."""

PRESET_PROMPT = _chat_prompt(PRESET_SYSTEM_TEMPLATE)
"""The prompt on a preset env: the presets in the system message, preset names in the history."""


@dataclass(frozen=True)
class HistoryRecord:
    """One row of the history table.

    Attributes:
        stage: Stage index (0 for the state after reset).
        weights: The action of that stage in ``[0, 1]`` (None for stage 0).
        preset: On a preset env, the name of the preset played (None for stage 0).
        metrics: Metric name -> raw value after the stage.
        objective: J after the stage (higher is better).
        reward: Change of J (None for stage 0).
        diverged: True if the stage diverged and was rolled back.
        feedback: The objective's textual feedback after the stage, if any.
    """

    stage: int
    weights: tuple[float, ...] | None
    metrics: Mapping[str, float]
    objective: float
    reward: float | None = None
    diverged: bool = False
    feedback: str | None = None
    preset: str | None = None

    @classmethod
    def from_info(
        cls, info: Mapping[str, Any], stage: int, weights: tuple[float, ...] | None, **played: Any
    ) -> HistoryRecord:
        """The row of what the env reported in ``info`` (``stage`` where it has none),
        after playing ``weights`` (None: the start) and ``played`` (``preset``, ``reward``)."""
        return cls(
            stage=int(info.get("stage", stage)), weights=weights,
            metrics={k: float(v) for k, v in info.get("metrics", {}).items()},
            objective=float(info.get("objective", math.nan)), diverged=bool(info.get("diverged", False)),
            feedback=info.get("feedback"), **played,
        )


@dataclass(frozen=True)
class ExampleRun:
    """A whole run on a training problem, shown to the model as an example.

    Attributes:
        instance: The training instance it ran on.
        played: The preset (or weights, as text) of each stage.
        start: J after reset.
        end: J after the last stage.
        objective: The objective it was played under, in words (empty: the agent's own).
    """

    instance: str
    played: tuple[str, ...]
    start: float
    end: float
    objective: str = ""


def render_examples(examples: Sequence[ExampleRun], objective: str = "") -> str:
    """The examples part of the objective (empty for no examples); examples played under
    another objective than ``objective`` (the agent's, in words) say so."""
    if not examples:
        return ""
    rows = ["| run | instance | presets, stage by stage | J start | J end |", "|---|---|---|---|---|"]
    for i, run in enumerate(examples, 1):
        rows.append(f"| {i} | {run.instance} | {', '.join(run.played)} | {_number(run.start)} | {_number(run.end)} |")
    other = {run.objective.strip() for run in examples} - {"", objective.strip()}
    if other:
        return OTHER_OBJECTIVE_EXAMPLES_TEMPLATE.format(
            example_table="\n".join(rows), example_objective=" and ".join(sorted(other))
        )
    return EXAMPLES_TEMPLATE.format(example_table="\n".join(rows))


@dataclass(frozen=True)
class PromptParts:
    """The rendered parts of the prompt."""

    system: str
    history: str
    format: str
    objective: str


def estimate_tokens(text: str) -> int:
    """A rough token count: characters / 4, rounded up."""
    return math.ceil(len(text) / 4)


def _number(value: float | None, spec: str = ".5g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(float(value), spec)


def _system_variables(spec: AgentSpec, examples: Sequence[ExampleRun] = ()) -> dict[str, Any]:
    metric_rows = ["| metric | better |", "|---|---|"]
    for metric in spec.metric_names:
        metric_rows.append(f"| {metric} | {'lower' if spec.lower_better.get(metric) else 'higher'} |")
    loss_rows = ["| loss | scale | description |", "|---|---|---|"]
    for loss in spec.loss_names:
        text = " ".join(str(spec.descriptions.get(loss, "")).split()).replace("|", "/")
        loss_rows.append(f"| {loss} | {_number(spec.scales.get(loss, 1.0), '.4g')} | {text} |")
    variables = {
        "task": spec.task,
        "max_stages": spec.max_stages,
        "stage_iters": spec.stage_iters,
        "objective": spec.objective.strip(),
        "metrics_table": "\n".join(metric_rows),
        "loss_table": "\n".join(loss_rows),
        "n_losses": spec.n_losses,
        "loss_list": ", ".join(spec.loss_names),
        "examples": render_examples(examples, spec.objective),
    }
    if spec.discrete:
        preset_rows = [f"| preset | {' | '.join(spec.loss_names)} |", "|---|" + "---|" * spec.n_losses]
        for name, weights in (spec.presets or {}).items():
            preset_rows.append(f"| {name} | {' | '.join(f'{w:.2f}' for w in weights)} |")
        variables.update(
            n_presets=len(spec.preset_names),
            preset_table="\n".join(preset_rows),
            preset_list=", ".join(spec.preset_names),
        )
    return variables


def render_system(spec: AgentSpec) -> str:
    """The system prompt for ``spec``."""
    template = PRESET_SYSTEM_PROMPT if spec.discrete else SYSTEM_PROMPT
    return template.format(**_system_variables(spec))


def render_objective(spec: AgentSpec, examples: Sequence[ExampleRun] = ()) -> str:
    """The objective part (the start of the user message) for ``spec``, with ``examples``."""
    return OBJECTIVE_PROMPT.format(**_system_variables(spec, examples))


def _row(record: HistoryRecord, spec: AgentSpec) -> str:
    if record.weights is None:
        weights = "(start)"
    elif spec.discrete:
        weights = str(record.preset)
    else:
        weights = " ".join(f"{w:.2f}" for w in record.weights)
    metrics = " ".join(f"{m}={_number(record.metrics.get(m))}" for m in spec.metric_names)
    reward = _number(record.reward, "+.3g")
    if record.diverged:
        reward += " (diverged, rolled back)"
    return f"| {record.stage} | {weights} | {metrics} | {_number(record.objective)} | {reward} |"


def _history_variables(
    spec: AgentSpec, records: Sequence[HistoryRecord], order: str, max_tokens: int | None
) -> dict[str, str]:
    if order not in HISTORY_ORDERS:
        raise ValueError(f"history={order!r} is unknown. Allowed: {HISTORY_ORDERS}")
    done = max((r.stage for r in records), default=0)
    progress = f"Next: stage {done + 1} of {spec.max_stages}."  # short: evaluated again at every decision
    start = [r for r in records if r.weights is None]
    stages = [r for r in records if r.weights is not None]
    played = "preset" if spec.discrete else f"weights ({', '.join(spec.loss_names)})"
    header = [f"| stage | {played} | metrics | objective J | reward |", "|---|---|---|---|---|"]

    def build(kept: list[HistoryRecord], omitted: int) -> dict[str, str]:
        shown = sorted(kept, key=lambda r: (r.objective if math.isfinite(r.objective) else -math.inf, r.stage)) if order == "sorted" else kept
        lines = []
        if order == "sorted" and kept:
            lines.append("Stages sorted by objective J, ascending (best last).")
        if omitted:
            lines.append(f"({omitted} earlier stage{'s' if omitted != 1 else ''} not shown.)")
        lines += header + [_row(r, spec) for r in start + shown]
        if not kept and not start:
            lines.append("(no stage yet)")
        feedback_rows = [r for r in start + kept if r.feedback]
        feedback = ""
        if feedback_rows:
            items = "\n".join(f"- after stage {r.stage}: {' '.join(str(r.feedback).split())}" for r in feedback_rows)
            feedback = "\n\nFeedback on the results:\n" + items
        return {"progress": progress, "history_table": "\n".join(lines), "feedback": feedback}

    kept = list(stages)
    variables = build(kept, 0)
    if max_tokens is not None:
        while len(kept) > 1 and estimate_tokens(HISTORY_PROMPT.format(**variables)) > max_tokens:
            kept = kept[1:]
            variables = build(kept, len(stages) - len(kept))
    return variables


def render_history(
    spec: AgentSpec, records: Sequence[HistoryRecord], order: str = "chronological", max_tokens: int | None = None
) -> str:
    """The history prompt.

    Args:
        spec: The env's spec.
        records: Stage 0 (after reset) and every finished stage, in order.
        order: ``"chronological"`` or ``"sorted"`` (by objective, ascending).
        max_tokens: Budget of the history part (characters / 4); the oldest stages are
            dropped until it fits (the latest stage is always kept). None = no limit.

    Raises:
        ValueError: Unknown ``order``.
    """
    return HISTORY_PROMPT.format(**_history_variables(spec, records, order, max_tokens))


def format_instructions(spec: AgentSpec, method: str, schema: type[BaseModel]) -> str:
    """What to return, for ``method`` (``function_calling``, ``json_schema``, ``text``)."""
    if method in ("function_calling", "json_schema"):
        tool = method == "function_calling"
        q = "`" if tool else '"'  # how a key is quoted
        if spec.discrete:
            start = f"Call the function `{PRESET_SCHEMA_NAME}` with" if tool else "Reply with a JSON object with"
            what = f"{q}preset{q}, the name of one preset ({', '.join(spec.preset_names)}),"
        else:
            start = f"Call the function `{ANSWER_SCHEMA_NAME}` with" if tool else "Reply with a JSON object that has"
            what = f"one weight in [0, 1] for each of the {spec.n_losses} losses ({', '.join(spec.loss_names)})"
        return f"{start} {what} and a short {q}rationale{q} (one or two sentences)."
    if method == "text":
        from langchain_core.output_parsers import PydanticOutputParser

        instructions = PydanticOutputParser(pydantic_object=schema).get_format_instructions()
        return instructions + "\n\nReply with the JSON object only, no other text."
    raise ValueError(f"method={method!r} is unknown. Allowed: ('function_calling', 'json_schema', 'text')")


def render_parts(
    spec: AgentSpec, records: Sequence[HistoryRecord], *, method: str, schema: type[BaseModel],
    order: str = "chronological", max_history_tokens: int | None = None, examples: Sequence[ExampleRun] = (),
) -> PromptParts:
    """The parts, rendered."""
    return PromptParts(
        system=render_system(spec),
        history=render_history(spec, records, order, max_history_tokens),
        format=FORMAT_PROMPT.format(format_instructions=format_instructions(spec, method, schema)),
        objective=render_objective(spec, examples),
    )


def build_messages(
    spec: AgentSpec, records: Sequence[HistoryRecord], *, method: str, schema: type[BaseModel],
    order: str = "chronological", max_history_tokens: int | None = None, reask: Sequence[BaseMessage] = (),
    examples: Sequence[ExampleRun] = (),
) -> list[BaseMessage]:
    """The chat messages of one request: :data:`PROMPT` (:data:`PRESET_PROMPT` on a preset
    env) filled in, then the re-asks."""
    prompt = PRESET_PROMPT if spec.discrete else PROMPT
    return prompt.format_messages(
        **_system_variables(spec, examples),
        **_history_variables(spec, records, order, max_history_tokens),
        format_instructions=format_instructions(spec, method, schema),
        reask=list(reask),
    )
