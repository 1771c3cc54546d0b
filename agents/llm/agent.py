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
        Unset: ``"local"``, the embedded SmolLM2 model of :mod:`agents.llm.local`.
    OPENAI_API_KEY (or the variable named by ``api_key_env``): the API key.
    LOSSAGENT_LLM_BASE_URL: base URL used when ``base_url`` is not given (an
        OpenAI-compatible server such as vLLM, Ollama or llama.cpp).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import BaseModel, SecretStr, ValidationError

from agents.base import BaseAgent
from agents.llm.prompts import HISTORY_ORDERS, HistoryRecord, build_messages
from agents.llm.schema import DEFAULT_WEIGHT, make_answer_schema, validate_answer

logger = logging.getLogger(__name__)

__all__ = ["BASE_URL_ENV_VAR", "METHODS", "MODEL_ENV_VAR", "LLMAgent", "resolve_chat_model"]

MODEL_ENV_VAR = "LOSSAGENT_LLM"
"""Environment variable naming the default model of ``LLMAgent()``."""

BASE_URL_ENV_VAR = "LOSSAGENT_LLM_BASE_URL"
"""Environment variable giving ``base_url`` when the argument is not set."""

METHODS = ("function_calling", "json_schema", "text")
"""How the structured answer is obtained."""

_NO_KEY = "sk-no-key-needed"
"""Placeholder key for OpenAI-compatible servers that check none (vLLM, llama.cpp)."""

# Providers whose LangChain classes take ``timeout`` and ``max_retries``; others keep
# their own retry settings (their retries then come on top of the agent's counts).
_RETRY_AWARE_PROVIDERS = ("openai", "azure_openai", "anthropic")

_PREVIEW_CHARS = 500


class _TransportFailure(Exception):
    """Transport retries used up."""


class _UnfixableModelError(Exception):
    """The model call failed in a way a retry cannot fix (e.g. HTTP 401)."""


def resolve_chat_model(
    model: BaseChatModel | str | None,
    *,
    base_url: str | None = None,
    api_key: SecretStr | None = None,
    timeout: float | None = None,
    temperature: float = 0.0,
) -> BaseChatModel:
    """Turn ``LLMAgent``'s ``model`` argument into a LangChain chat model.

    Args:
        model: A chat model (returned as is); ``"local"`` (the embedded model);
            ``"provider:model"`` (``langchain.chat_models.init_chat_model``, with
            ``base_url`` when given); a bare model name with ``base_url`` (``ChatOpenAI``
            on an OpenAI-compatible server); None: ``$LOSSAGENT_LLM``, else ``"local"``.
        base_url: Server URL for OpenAI-compatible servers.
        api_key: The key, if any.
        timeout: Request timeout in seconds.
        temperature: Sampling temperature.

    Returns:
        The chat model. Models built here have their client's own retries off
        (``max_retries=0``) so the agent's counts are exact.

    Raises:
        ValueError: A string the function cannot interpret.
        ImportError: The provider's package (or the ``local-llm`` extra) is missing.
    """
    if model is None:
        model = os.environ.get(MODEL_ENV_VAR) or "local"
    if not isinstance(model, str):
        if not isinstance(model, BaseChatModel):
            raise TypeError(
                f"model={model!r} is a {type(model).__name__}. Allowed: a LangChain BaseChatModel "
                "or a string ('local', 'provider:model', or a model name with base_url)."
            )
        return model
    base_url = base_url or os.environ.get(BASE_URL_ENV_VAR) or None
    options: dict[str, Any] = {"temperature": temperature}
    if model == "local":
        from agents.llm.local import local_chat_model

        extra = {"timeout": timeout} if timeout is not None else {}
        return local_chat_model(temperature=temperature, max_retries=0, **extra)
    if ":" in model:
        provider = model.split(":", 1)[0]
        if provider in _RETRY_AWARE_PROVIDERS or base_url:
            options["max_retries"] = 0
            if timeout is not None:
                options["timeout"] = timeout
        if base_url:
            options["base_url"] = base_url
            if provider == "openai":
                options["use_responses_api"] = False
                options["api_key"] = api_key or SecretStr(_NO_KEY)
        elif api_key is not None:
            options["api_key"] = api_key
        from langchain.chat_models import init_chat_model

        return init_chat_model(model, **options)
    if base_url:
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=model,
            base_url=base_url,
            api_key=api_key or SecretStr(_NO_KEY),
            timeout=timeout,
            max_retries=0,
            use_responses_api=False,
            **options,
        )
    raise ValueError(
        f"model={model!r} names no provider and no base_url was given. Allowed: 'local', "
        "'provider:model' (e.g. 'openai:gpt-4o-mini'), a model name with base_url=..., "
        "or a LangChain chat model."
    )


def _model_name(model: Any) -> str:
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def _secret_values(*objects: Any) -> list[str]:
    """Secret strings held by ``objects`` (SecretStr values, and SecretStr fields)."""
    found: list[str] = []
    for obj in objects:
        if isinstance(obj, SecretStr):
            found.append(obj.get_secret_value())
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                value = getattr(obj, name, None)
                if isinstance(value, SecretStr):
                    found.append(value.get_secret_value())
    return [s for s in found if len(s) >= 4]


def _transport_error_types() -> tuple[type[BaseException], ...]:
    try:
        import openai
    except ImportError:
        return (TimeoutError, ConnectionError)
    return (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError, TimeoutError, ConnectionError)


def _is_transport_error(error: BaseException) -> bool:
    """HTTP 429, 5xx, timeouts and connection errors: worth retrying after a pause."""
    if isinstance(error, _transport_error_types()):
        return True
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


def _is_format_error(error: BaseException) -> bool:
    """An answer that came back but cannot be used: ask again."""
    if isinstance(error, (OutputParserException, ValidationError, ValueError)):
        return True
    try:
        import openai
    except ImportError:
        return False
    return isinstance(error, (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError))


def _is_unfixable_model_error(error: BaseException) -> bool:
    """Other errors reported by the model's API (e.g. HTTP 400, 401, 404)."""
    if getattr(error, "status_code", None) is not None:
        return True
    try:
        import openai
    except ImportError:
        return False
    return isinstance(error, openai.APIError)


def _missing_answer_reason(raw: Any) -> str:
    """Why a reply that raised no parsing error still gave no answer."""
    if isinstance(raw, AIMessage) and raw.invalid_tool_calls:
        call = raw.invalid_tool_calls[0]
        return f"the arguments of the function call are not valid JSON ({call.get('error') or 'unparseable'})"
    if isinstance(raw, AIMessage) and not raw.tool_calls:
        return "the reply held no function call / no answer in the expected format"
    return "the reply held no answer in the expected format"


def _raw_preview(raw: Any) -> str:
    if not isinstance(raw, AIMessage):
        return ""
    parts = []
    if raw.content:
        parts.append(raw.content if isinstance(raw.content, str) else json.dumps(raw.content))
    for call in raw.tool_calls:
        parts.append(json.dumps(call.get("args", {})))
    for call in raw.invalid_tool_calls:
        parts.append(str(call.get("args", "")))
    text = " ".join(parts)
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."


class LLMAgent(BaseAgent):
    """Chooses every stage's weights by asking a chat model (LossAgent, Li et al. 2024).

    Args:
        model: A LangChain chat model, or a string: ``"local"`` (the embedded
            SmolLM2-135M, :func:`agents.llm.local.local_chat_model`), ``"provider:model"``
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

    Raises:
        ValueError: Unknown ``method`` or ``history``, or a negative count.
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
    ) -> None:
        super().__init__(initial_weights=initial_weights)
        if method not in METHODS:
            raise ValueError(f"method={method!r} is unknown. Allowed: {METHODS}")
        if history not in HISTORY_ORDERS:
            raise ValueError(f"history={history!r} is unknown. Allowed: {HISTORY_ORDERS}")
        for key, value in (("max_retries", max_retries), ("transport_retries", transport_retries)):
            if int(value) != value or value < 0:
                raise ValueError(f"{key}={value!r} must be an integer >= 0.")
        if max_history_tokens is not None and max_history_tokens < 1:
            raise ValueError(f"max_history_tokens={max_history_tokens!r} must be >= 1, or None.")
        if backoff_base < 0 or backoff_max < 0:
            raise ValueError(f"backoff_base={backoff_base!r} and backoff_max={backoff_max!r} must be >= 0.")
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
        self._api_key: SecretStr | None = None
        self.model: BaseChatModel | None = model if isinstance(model, BaseChatModel) else None
        self.model_name = _model_name(self.model) if self.model is not None else str(model or "")
        self.records: list[HistoryRecord] = []
        self._schema: type[BaseModel] | None = None
        self._runnable: Any = None
        self._previous: np.ndarray | None = None

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
        self.model_name = _model_name(model)
        return model

    def _reset(self) -> None:
        assert self.spec is not None
        if self.model is None:
            self.model = self._build_model()
        self._schema = make_answer_schema(self.spec.loss_names, self.spec.descriptions)
        if self.method == "text":
            self._runnable = self.model
        else:
            self._runnable = self.model.with_structured_output(
                self._schema, method=self.method, include_raw=True
            )
        self.records = []
        self._previous = None

    def _scrub(self, text: str) -> str:
        for secret in _secret_values(self._api_key, self.model):
            text = text.replace(secret, "***")
        return text

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

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        assert self.spec is not None
        self._record_start(info)
        names = self.spec.loss_names
        previous = self._previous
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
        try:
            action = self._decide(messages, previous, notes)
        except (_TransportFailure, _UnfixableModelError) as failure:
            action = None
            notes["errors"].append(self._scrub(str(failure)))
        if action is None:
            notes["fallback"] = True
            action = fallback_weights
            logger.warning(
                "LLMAgent (%s) stage %d: no usable answer after %d re-asks and %d transport retries; "
                "falling back to the previous weights %s.",
                self.model_name, self.t + 1, notes["retries"], notes["transport_retries"],
                [round(float(w), 4) for w in action],
            )
        notes["latency_s"] = time.perf_counter() - started
        return action

    def _decide(
        self, messages: list[BaseMessage], previous: np.ndarray | None, notes: dict[str, Any]
    ) -> np.ndarray | None:
        """Ask, re-ask on malformed answers; None when the re-asks are used up."""
        assert self.spec is not None
        names = self.spec.loss_names
        reask: list[BaseMessage] = []
        for attempt in range(self.max_retries + 1):
            raw, parsed, error = self._request(messages + reask, notes)
            action = None
            if parsed is not None:
                try:
                    action, corrections, rationale = validate_answer(parsed, names, previous)
                except ValueError as e:
                    error = e
                else:
                    notes["corrections"].extend(corrections)
                    notes["rationale"] = rationale
                    if corrections:
                        logger.warning(
                            "LLMAgent (%s) stage %d: corrected the answer: %s",
                            self.model_name, self.t + 1, corrections,
                        )
                    return action
            if error is None:
                error = _missing_answer_reason(raw)
            text = self._scrub(str(error))
            if len(text) > _PREVIEW_CHARS:
                text = text[: _PREVIEW_CHARS - 3] + "..."
            notes["errors"].append(text)
            if attempt == self.max_retries:
                return None
            notes["retries"] += 1
            logger.warning(
                "LLMAgent (%s) stage %d: malformed answer (%s); asking again (%d/%d).",
                self.model_name, self.t + 1, text, attempt + 1, self.max_retries,
            )
            preview = self._scrub(_raw_preview(raw))
            reask = [
                HumanMessage(
                    "Your previous answer could not be used: "
                    f"{text}\n"
                    + (f"Your previous answer was: {preview}\n" if preview else "")
                    + f"Answer again: one weight in [0, 1] for each of {', '.join(names)}, "
                    "and a short rationale, in the required format."
                )
            ]
        return None

    def _request(
        self, messages: list[BaseMessage], notes: dict[str, Any]
    ) -> tuple[Any, Any, BaseException | str | None]:
        """One answer: ``(raw message, parsed answer or None, parsing error or None)``.

        Retries transport errors with exponential backoff.

        Raises:
            _TransportFailure: Transport retries used up.
            _UnfixableModelError: The API reported an error a retry cannot fix.
        """
        for k in range(self.transport_retries + 1):
            try:
                result = self._runnable.invoke(messages)
            except Exception as e:  # classified below; anything else is re-raised
                if _is_transport_error(e):
                    text = self._scrub(f"{type(e).__name__}: {e}")
                    if k == self.transport_retries:
                        raise _TransportFailure(
                            f"transport error after {self.transport_retries} retries: {text}"
                        ) from None
                    delay = min(self.backoff_base * 2**k, self.backoff_max)
                    notes["transport_retries"] += 1
                    logger.warning(
                        "LLMAgent (%s) stage %d: %s; retrying in %.3g s (%d/%d).",
                        self.model_name, self.t + 1, text, delay, k + 1, self.transport_retries,
                    )
                    time.sleep(delay)
                    continue
                if _is_format_error(e):
                    return None, None, e
                if _is_unfixable_model_error(e):
                    text = self._scrub(f"{type(e).__name__}: {e}")
                    logger.warning("LLMAgent (%s) stage %d: %s", self.model_name, self.t + 1, text)
                    raise _UnfixableModelError(text) from None
                raise
            if self.method == "text":
                raw, parsed, error = result, None, None
                try:
                    from langchain_core.output_parsers import PydanticOutputParser

                    parsed = PydanticOutputParser(pydantic_object=self._schema).invoke(raw)
                except (OutputParserException, ValidationError, ValueError) as e:
                    error = e
            else:
                raw, parsed, error = result.get("raw"), result.get("parsed"), result.get("parsing_error")
            self._add_usage(raw, notes)
            return raw, parsed, error
        raise AssertionError("unreachable")

    @staticmethod
    def _add_usage(raw: Any, notes: dict[str, Any]) -> None:
        usage = getattr(raw, "usage_metadata", None)
        if not usage:
            return
        notes["prompt_tokens"] = (notes["prompt_tokens"] or 0) + int(usage.get("input_tokens", 0))
        notes["completion_tokens"] = (notes["completion_tokens"] or 0) + int(usage.get("output_tokens", 0))

    def _observe(self, action: np.ndarray, reward: float, observation: Any, info: Mapping[str, Any]) -> None:
        self.records.append(
            HistoryRecord(
                stage=int(info.get("stage", self.t + 1)),
                weights=tuple(float(w) for w in action),
                metrics={k: float(v) for k, v in info.get("metrics", {}).items()},
                objective=float(info.get("objective", math.nan)),
                reward=float(reward),
                diverged=bool(info.get("diverged", False)),
                feedback=info.get("feedback"),
            )
        )
        self._previous = np.asarray(action, dtype=np.float32).copy()

    def __repr__(self) -> str:
        return f"LLMAgent(model={self.model_name!r}, method={self.method!r}, history={self.history!r})"
