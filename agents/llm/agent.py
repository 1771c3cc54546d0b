"""The LLM loss agent: a LangChain chat model chooses the weights of every stage.

The prompt follows LossAgent (Li et al., 2024), see :mod:`agents.llm.prompts`; the
answer is the Pydantic schema of :mod:`agents.llm.schema`. Failures of the model are
outcomes, never exceptions out of :meth:`LLMAgent.act`:

* a malformed answer (unparseable, wrong types, NaN, no answer in the expected format)
  is asked again, with the error, up to ``max_retries`` times;
* a transport error (HTTP 429, 5xx, timeout, connection error) is retried with
  exponential backoff, up to ``transport_retries`` times per request;
* an error that a retry cannot fix (e.g. HTTP 401, 400), or retries used up: the
  previous weights are played (``fallback``);
* a parsed answer with values outside ``[0, 1]`` is clipped, with missing values
  filled from the previous weights (0.5 at the first decision).

Every retry, correction and fallback is counted in :meth:`LLMAgent.notes` (recorded by
``run_episode`` in each stage's ``notes``) and logged at WARNING. The API key is held
as a ``SecretStr`` and scrubbed from every error text the agent logs or records.

Environment variables:
    LOSSAGENT_LLM: the model used by ``LLMAgent()`` with no ``model``, in any form
        ``model`` accepts as a string (``"openai:gpt-4o-mini"``, ``"local"``, ...).
        Unset: ``"local"``, the embedded SmolLM2 model of :mod:`lossagent_env.chat.local`.
    OPENAI_API_KEY (or the variable named by ``api_key_env``): the API key.
    LOSSAGENT_LLM_BASE_URL: base URL used when ``base_url`` is not given (an
        OpenAI-compatible server such as vLLM, Ollama or llama.cpp).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, SecretStr

from agents.base import BaseAgent
from agents.llm.prompts import HISTORY_ORDERS, HistoryRecord, build_messages
from agents.llm.schema import (
    DEFAULT_WEIGHT,
    RATIONALE_MAX_CHARS,
    check_rationale_chars,
    make_answer_schema,
    make_preset_schema,
    validate_answer,
    validate_preset_answer,
)
from lossagent_env.chat import (
    BASE_URL_ENV_VAR,
    METHODS,
    MODEL_ENV_VAR,
    StructuredChat,
    model_name,
    resolve_chat_model,
    secret_values,
)
from lossagent_env.chat.structured import check_retry_settings

logger = logging.getLogger(__name__)

__all__ = ["BASE_URL_ENV_VAR", "METHODS", "MODEL_ENV_VAR", "LLMAgent", "resolve_chat_model"]


class LLMAgent(BaseAgent):
    """Chooses every stage's weights by asking a chat model (LossAgent, Li et al. 2024).

    Args:
        model: A LangChain chat model, or a string: ``"local"`` (the embedded
            SmolLM2-135M, :func:`lossagent_env.chat.local.local_chat_model`), ``"provider:model"``
            (e.g. ``"openai:gpt-4o-mini"``, via ``init_chat_model``), or a model name with
            ``base_url``. None: ``$LOSSAGENT_LLM`` if set, else ``"local"``.
        base_url: URL of an OpenAI-compatible server (vLLM, Ollama, llama.cpp);
            default ``$LOSSAGENT_LLM_BASE_URL``.
        api_key_env: Environment variable holding the API key. It is read when the
            model is built, kept as a ``SecretStr``, and never logged or recorded.
        method: ``"function_calling"`` (tool call), ``"json_schema"`` (structured
            output), or ``"text"`` (plain text parsed by ``PydanticOutputParser``, for
            models without tools).
        history: ``"chronological"`` or ``"sorted"`` (by objective, best last, as OPRO).
        max_history_tokens: Budget of the history part (characters / 4); oldest stages
            are dropped first.
        max_retries: Re-asks after a malformed answer, per decision.
        transport_retries: Retries after a transport error, per request.
        timeout: Request timeout in seconds, for models built from a string (None: the
            client's default; 120 s for the local model).
        temperature: Sampling temperature (for models built from a string).
        backoff_base: First pause after a transport error, in seconds; doubled after
            each further one.
        backoff_max: Longest pause, in seconds.
        initial_weights: Weights of the first stage, played without asking the model.
        rationale_chars: Longest rationale, in characters, stated in the answer schema
            (``maxLength``; the embedded model's grammar enforces it). The rationale
            follows the weights and is not part of the history, so it costs answer time
            but does not steer later decisions.

    Raises:
        ValueError: Unknown ``method`` or ``history``, a negative count, or
            ``rationale_chars`` below 1.
    """

    name = "llm"

    def __init__(
        self,
        model: BaseChatModel | str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        method: str = "function_calling",
        history: str = "chronological",
        max_history_tokens: int | None = 2000,
        max_retries: int = 2,
        transport_retries: int = 3,
        timeout: float | None = None,
        temperature: float = 0.0,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        initial_weights: Mapping[str, float] | Sequence[float] | None = None,
        rationale_chars: int = RATIONALE_MAX_CHARS,
    ) -> None:
        super().__init__(initial_weights=initial_weights)
        check_retry_settings(method, max_retries, transport_retries, backoff_base, backoff_max)
        check_rationale_chars(rationale_chars)
        if history not in HISTORY_ORDERS:
            raise ValueError(f"history={history!r} is unknown. Allowed: {HISTORY_ORDERS}")
        if max_history_tokens is not None and max_history_tokens < 1:
            raise ValueError(f"max_history_tokens={max_history_tokens!r} must be >= 1, or None.")
        self.model_spec = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.method = method
        self.history = history
        self.max_history_tokens = max_history_tokens
        self.max_retries = int(max_retries)
        self.transport_retries = int(transport_retries)
        self.timeout = timeout
        self.temperature = float(temperature)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.rationale_chars = rationale_chars
        self._api_key: SecretStr | None = None
        self.model: BaseChatModel | None = model if isinstance(model, BaseChatModel) else None
        self.model_name = model_name(self.model) if self.model is not None else str(model or "")
        self.records: list[HistoryRecord] = []
        self._schema: type[BaseModel] | None = None
        self._chat: StructuredChat | None = None
        self._previous: np.ndarray | int | None = None

    # ------------------------------------------------------------ setup
    def _build_model(self) -> BaseChatModel:
        key = os.environ.get(self.api_key_env)
        self._api_key = SecretStr(key) if key else None
        model = resolve_chat_model(
            self.model_spec,
            base_url=self.base_url,
            api_key=self._api_key,
            timeout=self.timeout,
            temperature=self.temperature,
        )
        self.model_name = model_name(model)
        return model

    def _reset(self) -> None:
        assert self.spec is not None
        if self.model is None:
            self.model = self._build_model()
        # The loss descriptions are in the system prompt's loss table; the schema (which
        # the model sees too) names the losses only, so the prompt holds them once.
        self._schema = (
            make_preset_schema(self.spec.preset_names, rationale_chars=self.rationale_chars)
            if self.spec.discrete
            else make_answer_schema(self.spec.loss_names, rationale_chars=self.rationale_chars)
        )
        self._chat = StructuredChat(
            self.model,
            self._schema,
            method=self.method,
            max_retries=self.max_retries,
            transport_retries=self.transport_retries,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            secrets=lambda: secret_values(self._api_key, self.model),
        )
        self.records = []
        self._previous = None

    # ------------------------------------------------------------ the loop
    def _record_start(self, info: Mapping[str, Any]) -> None:
        if self.records:
            return
        self.records.append(
            HistoryRecord(
                stage=int(info.get("stage", 0)),
                weights=None,
                metrics={k: float(v) for k, v in info.get("metrics", {}).items()},
                objective=float(info.get("objective", math.nan)),
                feedback=info.get("feedback"),
            )
        )

    def _on_initial(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        self._record_start(info)
        self._notes["model"] = self.model_name

    def messages(self) -> list[BaseMessage]:
        """The chat messages the next decision sends (without re-asks)."""
        assert self.spec is not None and self._schema is not None
        return build_messages(
            self.spec,
            self.records,
            method=self.method,
            schema=self._schema,
            order=self.history,
            max_history_tokens=self.max_history_tokens,
        )

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        assert self.spec is not None
        self._record_start(info)
        names = self.spec.loss_names
        previous = self._previous
        discrete = self.spec.discrete
        if discrete:  # the previous preset, or the first one at the first decision
            fallback_weights: np.ndarray | int = 0 if previous is None else int(previous)
        else:
            fallback_weights = (
                previous.copy() if previous is not None else np.full(len(names), DEFAULT_WEIGHT, np.float32)
            )
        notes: dict[str, Any] = {
            "model": self.model_name,
            "method": self.method,
            "rationale": None,
            "retries": 0,
            "transport_retries": 0,
            "corrections": [],
            "fallback": False,
            "prompt_tokens": None,
            "completion_tokens": None,
            "latency_s": 0.0,
            "errors": [],
        }
        self._notes = notes
        messages = self.messages()
        started = time.perf_counter()
        assert self._chat is not None

        def check(parsed: Any) -> np.ndarray | int:
            if discrete:
                index, rationale = validate_preset_answer(parsed, self.spec.preset_names)
                notes["rationale"] = rationale
                notes["preset"] = self.spec.preset_names[index]
                return index
            action, corrections, rationale = validate_answer(parsed, names, previous)
            notes["corrections"].extend(corrections)
            notes["rationale"] = rationale
            if corrections:
                logger.warning(
                    "LLMAgent (%s) stage %d: corrected the answer: %s",
                    self.model_name, self.t + 1, corrections,
                )
            return action

        wanted = (
            f"the name of one preset ({', '.join(self.spec.preset_names)})"
            if discrete
            else f"one weight in [0, 1] for each of {', '.join(names)}"
        )

        def reask(reason: str, preview: str) -> str:
            return (
                f"Your previous answer could not be used: {reason}\n"
                + (f"Your previous answer was: {preview}\n" if preview else "")
                + f"Answer again: {wanted}, and a short rationale, in the required format."
            )

        answer = self._chat.ask(
            messages, check, what=f"LLMAgent ({self.model_name}) stage {self.t + 1}",
            reask=reask, logger=logger,
        )
        notes.update(
            retries=answer.retries,
            transport_retries=answer.transport_retries,
            errors=list(answer.errors),
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
        )
        action = answer.value if answer.ok else None
        if action is None:
            notes["fallback"] = True
            action = fallback_weights
            shown = (
                f"preset {self.spec.preset_names[action]!r}"
                if discrete
                else [round(float(w), 4) for w in action]
            )
            logger.warning(
                "LLMAgent (%s) stage %d: no usable answer after %d re-asks and %d transport retries; "
                "falling back to the previous weights %s.",
                self.model_name, self.t + 1, notes["retries"], notes["transport_retries"], shown,
            )
        notes["latency_s"] = time.perf_counter() - started
        return action

    def _observe(self, action: np.ndarray, reward: float, observation: Any, info: Mapping[str, Any]) -> None:
        assert self.spec is not None
        preset = None
        if self.spec.discrete:
            index = int(np.asarray(action).reshape(()))
            preset, action = self.spec.preset_names[index], self.spec.preset_vector(index)
            self._previous = index
        self.records.append(
            HistoryRecord(
                stage=int(info.get("stage", self.t + 1)),
                weights=tuple(float(w) for w in action),
                preset=preset,
                metrics={k: float(v) for k, v in info.get("metrics", {}).items()},
                objective=float(info.get("objective", math.nan)),
                reward=float(reward),
                diverged=bool(info.get("diverged", False)),
                feedback=info.get("feedback"),
            )
        )
        if not self.spec.discrete:
            self._previous = np.asarray(action, dtype=np.float32).copy()

    def __repr__(self) -> str:
        return f"LLMAgent(model={self.model_name!r}, method={self.method!r}, history={self.history!r})"
