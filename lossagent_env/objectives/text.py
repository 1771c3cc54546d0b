"""Text objectives: a description of the wanted result, judged by a model or translated.

:class:`TextObjective` is the entry point; ``mode="judge"`` makes a :class:`JudgeObjective`
(a chat model scores every stage 0-10, metric ``"text_judge"``, and its critique is the
feedback), ``mode="translate"`` a :class:`TranslateObjective` (the text becomes a mix of
metrics once, at setup). Retries, failures and the fallback: see docs/objectives.md.

Example::

    TextObjective("sharp fur, no ringing", judge="openai:gpt-4o-mini")
    TextObjective("sharp fur, no ringing", mode="translate", llm="local")
"""

from __future__ import annotations

import base64
import copy
import io
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field, create_model

from lossagent_env.arguments import check_arguments
from lossagent_env.chat import METHODS, RetrySettings, StructuredChat, resolve_chat_model
from lossagent_env.metrics import OPEN_BOUND, metric_info, usable_metrics
from lossagent_env.objectives.base import Objective, ObjectiveResult
from lossagent_env.objectives.metric import MetricObjective

__all__ = [
    "DEFAULT_MIX",
    "JUDGE_METRIC",
    "METHODS",
    "MODES",
    "JudgeAnswer",
    "JudgeObjective",
    "TextObjective",
    "TranslateObjective",
    "encode_png",
]

logger = logging.getLogger(__name__)

MODES = ("judge", "translate")
"""Allowed values of ``TextObjective(mode=...)``."""

JUDGE_METRIC = "text_judge"
"""Metric name of the judge's score in ``info["metrics"]``."""

DEFAULT_MIX: dict[str, float] = {"psnr": 1.0}
"""The mix used when the translation fails: PSNR alone."""


class JudgeAnswer(BaseModel):
    """How well the restored images match the description."""

    score: float = Field(
        ge=0.0,
        le=10.0,
        description="How well the restored images match the description, from 0 (not at all) to 10 (perfectly).",
    )
    critique: str = Field(
        min_length=1, description="One paragraph: what matches the description, what does not, and what to improve."
    )


def _mix_schema(names: Sequence[str]) -> type[BaseModel]:
    """The translate answer; ``metric`` advertises the allowed names as an enum.

    The enum goes into the JSON schema the model sees (and constrains the local model's
    grammar) while validation accepts any string, so unknown names are dropped and
    reported rather than failing the whole answer.
    """
    term = create_model(
        "MetricWeight",
        __doc__="One metric of the mix and its relative weight.",
        metric=(str, Field(description="A metric name from the list.", json_schema_extra={"enum": list(names)})),
        weight=(float, Field(description="Relative weight, a number >= 0.")),
    )
    return create_model(
        "MetricMix",
        __doc__="A weighted mix of image-quality metrics that expresses the description.",
        terms=(
            list[term],  # type: ignore[valid-type]
            Field(min_length=1, description="The metrics of the mix, each with a relative weight >= 0."),
        ),
    )


def encode_png(image: torch.Tensor) -> str:
    """A ``data:image/png;base64,...`` URL of one image.

    Args:
        image: ``(C, H, W)`` with C 1 or 3, values in ``[0, 1]`` (clamped).

    Returns:
        The data URL of the PNG, same size as ``image``.
    """
    from PIL import Image

    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"encode_png needs a (C, H, W) image with C 1 or 3; got shape {tuple(image.shape)}.")
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    array = np.ascontiguousarray(array.transpose(1, 2, 0))
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _reask(reason: str, preview: str) -> str:
    return f"Your previous answer was rejected: {reason}. Answer again."


class TextObjective(Objective):
    """An objective given as text: a model judges the images, or maps the text onto metrics.

    ``TextObjective(..., mode="judge")`` builds a :class:`JudgeObjective`,
    ``mode="translate"`` a :class:`TranslateObjective`; both are TextObjectives.

    Args:
        description: What the restored images should look like, e.g.
            ``"sharp fur, no ringing"``.
        mode: ``"judge"`` (a model scores every stage 0-10) or ``"translate"`` (the
            text becomes a mix of metrics once, at setup).
        judge: Judge mode: a LangChain chat model that accepts images, or a string that
            :func:`lossagent_env.chat.resolve_chat_model` understands
            (``"openai:gpt-4o-mini"``). Required in judge mode.
        llm: Translate mode: a chat model or a string (``"local"`` is the embedded
            offline model); None: ``$LOSSAGENT_LLM``, else ``"local"``.
        max_retries: Re-asks after a malformed answer (per stage in judge mode, once in
            translate mode); ``>= 0``.
        transport_retries: Retries after a transport error, per request; ``>= 0``.
        backoff_base: First pause after a transport error, in seconds (doubled after
            each further one, at most 8 s).
        images: Judge mode: how many evaluation images the judge sees (the first
            ones), ``>= 1``.
        method: How the structured answer is obtained, one of
            :data:`lossagent_env.chat.METHODS`.
        candidates: Translate mode: the metric names offered; default every metric of
            :func:`~lossagent_env.metrics.usable_metrics` with finite nominal bounds
            (open-ended metrics such as ``mad`` have no usable scale).

    Attributes:
        retries: Re-asks sent after malformed answers, over the objective's life.
        transport_retries: Requests repeated after transport errors, over its life.

    Raises:
        ValueError: Bad mode, method, count or images; judge mode without judge.
    """

    mode: str = ""

    def __new__(cls, *args: Any, mode: str = "judge", **kwargs: Any) -> TextObjective:
        if cls is TextObjective:
            if mode not in MODES:
                raise ValueError(f"mode={mode!r} is not supported. Allowed: {list(MODES)}.")
            cls = JudgeObjective if mode == "judge" else TranslateObjective
        return super().__new__(cls)

    def __init__(
        self,
        description: str,
        *,
        mode: str | None = None,
        judge: Any = None,
        llm: Any = None,
        max_retries: int = 2,
        transport_retries: int = 2,
        backoff_base: float = 0.5,
        images: int = 2,
        method: str = "function_calling",
        candidates: Sequence[str] | None = None,
    ):
        super().__init__()
        if mode is not None and mode != self.mode:
            raise ValueError(f"mode={mode!r} does not fit {type(self).__name__} (mode {self.mode!r}).")
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"description must be a non-empty string; got {description!r}.")
        self.settings = check_arguments(RetrySettings, type(self).__name__, {
            "method": method, "max_retries": max_retries, "transport_retries": transport_retries,
            "backoff_base": backoff_base,
        })
        if isinstance(images, bool) or not isinstance(images, int) or images < 1:
            raise ValueError(f"images={images!r}. Allowed: an integer >= 1.")
        self.description = " ".join(description.split())
        self.judge = judge
        self.llm = llm
        self.images = images
        self.candidates = None if candidates is None else list(candidates)
        self.retries = 0
        self.transport_retries = 0
        self._chat: StructuredChat | None = None

    def _structured_chat(self, model: Any, schema: type[BaseModel]) -> StructuredChat:
        return StructuredChat(resolve_chat_model(model), schema, self.settings)

    def _ask(self, chat: StructuredChat, messages: list[Any], check: Any, what: str) -> Any:
        """One structured question; counts its retries; raises on unfixable errors."""
        answer = chat.ask(messages, check, what=what, reask=_reask, logger=logger)
        self.retries += answer.retries
        self.transport_retries += answer.transport_retries
        if answer.stopped == "unfixable":
            raise RuntimeError(f"{what}: the model failed with an error a retry cannot fix: {answer.reason}")
        return answer

    def __deepcopy__(self, memo: dict[int, Any]) -> TextObjective:
        """A copy that shares the chat models (they hold clients and locks), copying the rest.

        Gymnasium deep-copies the env's keyword arguments for ``env.spec``.
        """
        new = copy.copy(self)
        memo[id(self)] = new
        for key, value in vars(self).items():
            if key not in _SHARED:
                setattr(new, key, copy.deepcopy(value, memo))
        return new

    def __repr__(self) -> str:
        return f"TextObjective({self.description!r}, mode={self.mode!r})"


_SHARED = frozenset({"judge", "llm", "_chat"})


class JudgeObjective(TextObjective):
    """A chat model scores every stage 0-10 against the description (docs/objectives.md).

    Attributes:
        failures: Stages whose score could not be obtained (``J`` is NaN).
    """

    mode = "judge"

    def __init__(self, description: str, **kwargs: Any):
        super().__init__(description, **kwargs)
        if self.judge is None:
            raise ValueError(
                "mode='judge' needs judge=: a LangChain chat model that accepts images, "
                "or a string such as 'openai:gpt-4o-mini'."
            )
        self.failures = 0
        self.metric_names = (JUDGE_METRIC,)
        self.lower_better = {JUDGE_METRIC: False}
        self.bounds = {JUDGE_METRIC: (0.0, 10.0)}

    def setup(self, device: str | torch.device = "cpu") -> None:
        """Build the judge (once).

        Raises:
            ImportError: The model's package is missing.
        """
        if self._chat is None:
            self._chat = self._structured_chat(self.judge, JudgeAnswer)

    def evaluate(
        self, restored: torch.Tensor, target: torch.Tensor, *, degraded: torch.Tensor | None = None,
        stage: int = 0, weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """The judge's score (0-10, higher is better) and critique; NaN if it kept failing.
        The judge sees the first ``images`` restored images, each with its degraded
        input, never the target.

        Raises:
            RuntimeError: The model failed with an error a retry cannot fix.
        """
        self.setup(restored.device)
        assert self._chat is not None

        def check(parsed: Any) -> ObjectiveResult:
            critique = " ".join(parsed.critique.split())
            score = float(parsed.score)
            return ObjectiveResult({JUDGE_METRIC: score}, score, feedback=critique)

        what = f"Judge answer for stage {stage}"
        answer = self._ask(self._chat, self.judge_messages(restored, degraded), check, what)
        if answer.ok:
            return answer.value
        self.failures += 1
        logger.warning(
            "Judge gave no usable score for stage %d after %d tries (%s); the stage's "
            "objective is missing (NaN). Failures so far: %d.",
            stage, answer.retries + 1, answer.reason, self.failures,
        )
        return ObjectiveResult(metrics={JUDGE_METRIC: math.nan}, value=math.nan)

    def judge_messages(self, restored: torch.Tensor, degraded: torch.Tensor | None) -> list[Any]:
        """The message sent to the judge: description, then per image restored (+ degraded).

        Args:
            restored: ``(N, C, H, W)`` in ``[0, 1]``; the first ``images`` are shown.
            degraded: ``(N, C, h, w)`` in ``[0, 1]`` or None.
        """

        count = min(self.images, restored.shape[0])
        content: list[str | dict[str, Any]] = [
            {
                "type": "text",
                "text": (
                    f'Description of the wanted result: "{self.description}"\n'
                    f"Below are {count} restored image(s), each followed by the degraded input it was "
                    "restored from, for reference. Score how well the restored images match the "
                    "description, from 0 to 10, and write a one-paragraph critique that says what to improve."
                ),
            }
        ]
        for i in range(count):
            content.append({"type": "text", "text": f"Restored image {i + 1}:"})
            content.append({"type": "image_url", "image_url": {"url": encode_png(restored[i])}})
            if degraded is not None:
                content.append({"type": "text", "text": f"Degraded input {i + 1} (reference):"})
                content.append({"type": "image_url", "image_url": {"url": encode_png(degraded[i])}})
        system = SystemMessage("You are a strict judge of image-restoration results. Answer with the JudgeAnswer tool.")
        return [system, HumanMessage(content=content)]

    def describe(self) -> str:
        return (
            f"The objective J is a judge model's score, 0 to 10 (higher is better), of how well the "
            f'restored evaluation images match the description: "{self.description}". After each '
            "stage the judge's critique is given as feedback. A stage the judge could not score "
            "is missing (no reward). The reward of a stage is the change of J."
        )


class TranslateObjective(TextObjective):
    """The description becomes a mix of metrics, once, at setup (docs/objectives.md).

    Attributes:
        mix: After setup: metric -> relative weight (sum 1).
        dropped: Names the model gave that are not in the catalogue.
        fallback_reason: Why :data:`DEFAULT_MIX` is used, else None.
    """

    mode = "translate"

    def __init__(self, description: str, **kwargs: Any):
        super().__init__(description, **kwargs)
        self.mix: dict[str, float] | None = None
        self.dropped: list[str] = []
        self.fallback_reason: str | None = None
        self._inner: MetricObjective | None = None

    def setup(self, device: str | torch.device = "cpu") -> None:
        """Translate (once), then set up the metrics of the mix.

        Raises:
            MissingWeightsError: A metric of the mix needs a weight file not installed.
            ImportError: The model's package is missing.
            RuntimeError: The model failed with an error a retry cannot fix.
        """
        if self._inner is None:
            self._translate()
        assert self._inner is not None
        self._inner.setup(device)

    def offered_metrics(self) -> list[str]:
        """The metric names the translation may choose from."""
        if self.candidates is not None:
            usable = set(usable_metrics())
            return [name for name in self.candidates if name in usable]
        return [name for name in usable_metrics() if metric_info(name).high - metric_info(name).low < OPEN_BOUND]

    def translation_prompt(self, names: Sequence[str]) -> str:
        """The text sent to the model in translate mode."""
        lines = []
        for name in names:
            info = metric_info(name)
            direction = "lower is better" if info.lower_better else "higher is better"
            reference = "compares with the target" if info.full_reference else "no reference"
            lines.append(f"- {name} ({direction}; {reference}): {info.description}")
        return (
            "An image-restoration network is trained so that its outputs match this description:\n"
            f'"{self.description}"\n\n'
            "Choose a weighted mix of the image-quality metrics below that rewards exactly that. "
            "Weights are relative (>= 0, at least one > 0); each metric's direction is handled "
            "automatically, so give a positive weight to every metric that matters.\n"
            "Metrics:\n" + "\n".join(lines) + "\n\nAnswer with the MetricMix tool."
        )

    def _translate(self) -> None:
        names = self.offered_metrics()
        if not names:
            which = "of the candidates " if self.candidates is not None else ""
            self._use_default(f"no metric {which}is usable offline now")
            return
        chat = self._structured_chat(self.llm, _mix_schema(names))
        answer = self._ask(
            chat, [HumanMessage(self.translation_prompt(names))], lambda parsed: self._mix_of(parsed.terms, names),
            "Translate answer",
        )
        if answer.ok:
            self._use_mix(answer.value)
            logger.info("Text %r translated into the mix %s", self.description, self.mix)
            return
        self._use_default(f"the model's answers were invalid after {answer.retries + 1} tries: {answer.reason}")

    def _mix_of(self, terms: Sequence[Any], allowed: Sequence[str]) -> dict[str, float]:
        """The mix an answer proposes. Names not in ``allowed`` are dropped, and reported
        in :attr:`dropped` and a warning; a weight that is not finite and ``>= 0``, or no
        known metric with a weight ``> 0``, raises ``ValueError`` (the answer is asked
        again)."""
        dropped = [t.metric for t in terms if t.metric not in allowed]
        self.dropped.extend(d for d in dropped if d not in self.dropped)
        if dropped:
            logger.warning("Translation named metrics not in the catalogue of usable metrics; dropped: %s", dropped)
        mix: dict[str, float] = {}
        for term in terms:
            if term.metric in allowed:
                if not (math.isfinite(term.weight) and term.weight >= 0):
                    raise ValueError(f"weight of {term.metric!r} is {term.weight!r}; allowed: a finite number >= 0")
                mix[term.metric] = mix.get(term.metric, 0.0) + float(term.weight)
        if not any(w > 0 for w in mix.values()):
            raise ValueError(
                f"no known metric with a weight > 0 (dropped unknown names {dropped}; allowed: {list(allowed)})"
            )
        return mix

    def _use_mix(self, mix: Mapping[str, float]) -> None:
        total = sum(mix.values())
        self.mix = {name: w / total for name, w in mix.items() if w > 0}
        infos = {name: metric_info(name) for name in self.mix}
        self._inner = MetricObjective(
            {name: share / (infos[name].high - infos[name].low) for name, share in self.mix.items()}
        )
        self.metric_names = self._inner.metric_names
        self.lower_better = dict(self._inner.lower_better)
        self.bounds = dict(self._inner.bounds)

    def _use_default(self, reason: str) -> None:
        self.fallback_reason = reason
        logger.warning(
            "Translation of %r failed (%s); using the default mix %s.", self.description, reason, DEFAULT_MIX
        )
        self._use_mix(DEFAULT_MIX)

    def evaluate(
        self, restored: torch.Tensor, target: torch.Tensor, *, degraded: torch.Tensor | None = None,
        stage: int = 0, weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """The metric mix on the evaluation images."""
        if self._inner is None:
            self.setup(restored.device)
        assert self._inner is not None
        return self._inner.evaluate(restored, target, degraded=degraded, stage=stage)

    def combine(self, values: Mapping[str, float]) -> float:
        """``J`` of the mix from raw metric values (after setup)."""
        if self._inner is None:
            raise RuntimeError("TranslateObjective.combine needs setup() first: the mix is not known yet.")
        return self._inner.combine(values)

    def describe(self) -> str:
        head = f'The objective was given as the text "{self.description}", translated into metrics'
        if self._inner is None:
            return head + " at setup (not done yet)."
        mix = ", ".join(f"{name} {share:.2f}" for name, share in (self.mix or {}).items())
        lines = [f"{head}: relative weights {mix}; each metric is divided by the span of its range."]
        if self.fallback_reason is not None:
            lines.append(f"The translation failed ({self.fallback_reason}); the default mix {DEFAULT_MIX} is used.")
        if self.dropped:
            lines.append(f"Unknown metric names dropped from the translation: {self.dropped}.")
        lines.append(self._inner.describe())
        return "\n".join(lines)
