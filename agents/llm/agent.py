"""The LLM loss agent: a LangChain chat model chooses the weights of every stage.

The prompt follows LossAgent (Li et al., 2024), see :mod:`agents.llm.prompts`; the
answer is the Pydantic schema of :mod:`agents.llm.schema`. Failures of the model
(malformed answers, transport errors, out-of-range values) are outcomes, never
exceptions out of :meth:`LLMAgent.act`: each re-ask, retry, correction and fallback is
counted in :meth:`LLMAgent.notes` and logged at WARNING. The API key is held as a
``SecretStr`` and scrubbed from every error text the agent logs or records. See
docs/agents.md ("The LLM agent") for how each failure is handled and the environment
variables (``LOSSAGENT_LLM``, ``LOSSAGENT_LLM_BASE_URL``, ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from agents.base import BaseAgent
from agents.llm.prompts import HISTORY_ORDERS, ExampleRun, HistoryRecord, build_messages
from agents.llm.schema import (
    DEFAULT_WEIGHT,
    RATIONALE_MAX_CHARS,
    RationaleChars,
    make_answer_schema,
    make_preset_schema,
    validate_answer,
    validate_preset_answer,
)
from agents.spec import AgentSpec
from agents.tuning import training_env
from lossagent_env.arguments import NonNegative, Positive, check_arguments
from lossagent_env.chat import (
    BASE_URL_ENV_VAR,
    METHODS,
    MODEL_ENV_VAR,
    RetrySettings,
    StructuredChat,
    is_embedded,
    model_name,
    model_warnings,
    resolve_chat_model,
    secret_values,
)

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 50
"""Most example runs an LLM agent may be shown (each is a row of its prompt)."""

__all__ = ["BASE_URL_ENV_VAR", "METHODS", "MODEL_ENV_VAR", "LLMAgent", "resolve_chat_model"]

if TYPE_CHECKING:  # the names are known at run time
    History = str
else:
    History = Literal[HISTORY_ORDERS]
Name = Annotated[str, Field(min_length=1)]


class _LLMArguments(RetrySettings):
    """What :class:`LLMAgent`'s arguments may be (see its docstring): the chat's retry
    settings, and the agent's own."""

    model_config = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)

    model: Any
    base_url: Name | None
    api_key_env: Name
    history: History
    max_history_tokens: Annotated[int, Field(ge=1)] | None
    timeout: Positive | None
    temperature: NonNegative
    rationale_chars: RationaleChars
    examples: Annotated[int, Field(ge=0, le=MAX_EXAMPLES)]

    @field_validator("model")
    @classmethod
    def _a_chat_model_or_its_name(cls, model: Any) -> Any:
        if model is None or isinstance(model, BaseChatModel) or (isinstance(model, str) and model.strip()):
            return model
        raise ValueError(
            "should be a LangChain chat model, a model name such as 'openai:gpt-4o-mini' or 'local', "
            "or None (the model named by $LOSSAGENT_LLM, else the embedded one)"
        )


class _Weights:
    """The answer on a ``Box`` env: one weight per loss."""

    def __init__(self, spec: AgentSpec) -> None:
        self.loss_names = spec.loss_names
        self.wanted = f"one weight in [0, 1] for each of {', '.join(self.loss_names)}"  # in a re-ask

    def schema(self, rationale_chars: int) -> type[BaseModel]:
        # The loss descriptions are in the system prompt's loss table; the schema (which
        # the model sees too) names the losses only, so the prompt holds them once.
        return make_answer_schema(self.loss_names, rationale_chars=rationale_chars)

    def fallback(self, previous: np.ndarray | None) -> np.ndarray:
        """The previous weights, or :data:`DEFAULT_WEIGHT` everywhere at the first decision."""
        return previous.copy() if previous is not None else np.full(len(self.loss_names), DEFAULT_WEIGHT, np.float32)

    def check(
        self, parsed: Any, previous: np.ndarray | None
    ) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]]]:
        """The action, the notes and the corrections of a parsed answer (see
        :func:`validate_answer`; ``ValueError`` when it is unusable)."""
        action, corrections, rationale = validate_answer(parsed, self.loss_names, previous)
        return action, {"rationale": rationale}, corrections

    def shown(self, action: Any) -> Any:
        """The action as the fallback warning shows it."""
        return [round(float(w), 4) for w in action]

    def played(self, action: np.ndarray) -> tuple[str | None, np.ndarray, np.ndarray]:
        """The preset (None), the weights and what the next fallback plays, after ``action``."""
        weights = np.asarray(action, dtype=np.float32)
        return None, weights, weights.copy()


class _Presets:
    """The answer on a preset env (a ``Discrete`` action space): one preset by name."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self.wanted = f"the name of one preset ({', '.join(spec.preset_names)})"  # in a re-ask

    def schema(self, rationale_chars: int) -> type[BaseModel]:
        return make_preset_schema(self.spec.preset_names, rationale_chars=rationale_chars)

    def fallback(self, previous: int | None) -> int:
        """The previous preset, or the first one at the first decision."""
        return 0 if previous is None else int(previous)

    def check(self, parsed: Any, previous: int | None) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
        """The preset index and the notes of a parsed answer (``ValueError`` when it
        names no preset); a preset needs no corrections."""
        index, rationale = validate_preset_answer(parsed, self.spec.preset_names)
        return index, {"rationale": rationale, "preset": self.spec.preset_names[index]}, []

    def shown(self, action: Any) -> Any:
        """The action as the fallback warning shows it."""
        return f"preset {self.spec.preset_names[action]!r}"

    def played(self, action: Any) -> tuple[str | None, np.ndarray, int]:
        """The preset's name, its weights and what the next fallback plays, after ``action``."""
        index = int(np.asarray(action).reshape(()))
        return self.spec.preset_names[index], self.spec.preset_vector(index), index


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
        max_retries, transport_retries, backoff_base, backoff_max: Re-asks after a
            malformed answer per decision, retries after a transport error per request,
            and their pauses in seconds (as :class:`lossagent_env.chat.RetrySettings`).
        timeout: Request timeout in seconds, for models built from a string (None: the
            client's default; 120 s for the local model).
        temperature: Sampling temperature (for models built from a string).
        initial_weights: Weights of the first stage, played without asking the model.
        rationale_chars: Longest rationale, in characters (``[1, RATIONALE_LIMIT]``),
            stated in the answer schema (``maxLength``; the embedded model's grammar
            enforces it). The rationale follows the weights and is not part of the
            history, so it costs answer time but does not steer later decisions.
        examples: Example runs shown after the objective (0: zero-shot; at most
            :data:`MAX_EXAMPLES`). On a table of problem instances, :meth:`prepare`
            plays ``examples`` whole runs on the table's training instances
            (:func:`agents.tuning.training_env`): first each preset held for every
            stage, all on the problem of seed 0, then preset sequences drawn at random
            (seeded) on the problems of seeds 1, 2, ...; the prompt shows each one's
            presets and its J at the start and the end. The budget is :meth:`budget`.

    Raises:
        ValueError: An argument of the wrong type or range (checked by one schema; the
            message names the argument, its value and what is allowed).
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
        examples: int = 0,
    ) -> None:
        super().__init__(initial_weights=initial_weights)
        checked = check_arguments(_LLMArguments, "LLMAgent", {
            "model": model, "base_url": base_url, "api_key_env": api_key_env, "method": method,
            "history": history, "max_history_tokens": max_history_tokens, "max_retries": max_retries,
            "transport_retries": transport_retries, "timeout": timeout, "temperature": temperature,
            "backoff_base": backoff_base, "backoff_max": backoff_max, "rationale_chars": rationale_chars,
            "examples": examples,
        })
        self.examples = checked.examples
        self.example_runs: list[ExampleRun] = []
        self._example_instances: list[str] = []
        self._example_stages = 0
        self.model_spec = model
        self.base_url = checked.base_url
        self.api_key_env = checked.api_key_env
        # the chat's settings, checked above as part of the agent's arguments
        self.settings = RetrySettings.model_construct(**{k: getattr(checked, k) for k in RetrySettings.model_fields})
        self.method = checked.method
        self.history = checked.history
        self.max_history_tokens = checked.max_history_tokens
        self.timeout = checked.timeout
        self.temperature = float(checked.temperature)
        self.rationale_chars = checked.rationale_chars
        self._api_key: SecretStr | None = None
        self.model: BaseChatModel | None = model if isinstance(model, BaseChatModel) else None
        self.model_name = model_name(self.model) if self.model is not None else str(model or "")
        self.records: list[HistoryRecord] = []
        self._schema: type[BaseModel] | None = None
        self._kind: _Weights | _Presets | None = None
        self._chat: StructuredChat | None = None
        self._previous: Any = None  # the last action played: weights, or a preset's index

    # ------------------------------------------------------------ for runners
    @classmethod
    def uses_embedded_model(cls, kwargs: Mapping[str, Any]) -> bool:
        """True for ``model="local"``, or no model while ``$LOSSAGENT_LLM`` names none."""
        return is_embedded(kwargs.get("model"))

    @classmethod
    def start_embedded_model(cls, kwargs: Mapping[str, Any]) -> None:
        """Start the embedded model's shared server here where ``kwargs`` ask for it."""
        if cls.uses_embedded_model(kwargs):
            resolve_chat_model(kwargs.get("model"))

    # ------------------------------------------------------------ setup
    def _build_model(self) -> BaseChatModel:
        key = os.environ.get(self.api_key_env)
        self._api_key = SecretStr(key) if key else None
        model = resolve_chat_model(
            self.model_spec, base_url=self.base_url, api_key=self._api_key, timeout=self.timeout,
            temperature=self.temperature,
        )
        self.model_name = model_name(model)
        return model

    def _reset(self) -> None:
        assert self.spec is not None
        if self.model is None:
            self.model = self._build_model()
        self._kind = _Presets(self.spec) if self.spec.discrete else _Weights(self.spec)
        self._schema = self._kind.schema(self.rationale_chars)
        self._chat = StructuredChat(
            self.model, self._schema, self.settings, secrets=lambda: secret_values(self._api_key, self.model)
        )
        self.records = []
        self._previous = None

    # ------------------------------------------------------------ the loop
    def _record_start(self, info: Mapping[str, Any]) -> None:
        if not self.records:
            self.records.append(HistoryRecord.from_info(info, 0, None))

    def _on_initial(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        self._record_start(info)
        self._notes["model"] = self.model_name

    def prepare(self, env: Any) -> None:
        """Play the example runs on the training instances (once; see ``examples``)."""
        if not self.examples or self.example_runs:
            return
        view = training_env(env, f"LLMAgent(examples={self.examples})")
        k, stages = len(view.preset_names), view.max_stages
        draw = np.random.default_rng(self.examples)
        sequences = [[p] * stages for p in range(k)][: self.examples]
        while len(sequences) < self.examples:
            sequences.append([int(a) for a in draw.integers(k, size=stages)])
        for i, sequence in enumerate(sequences):
            _, info = view.reset(seed=max(0, i - k + 1))  # the static runs on one problem, to compare
            start = float(info["objective"])
            for action in sequence:
                info = view.step(action)[-1]
            played, objective = tuple(view.preset_names[a] for a in sequence), str(view.objective.describe())
            self.example_runs.append(ExampleRun(view.instance, played, start, float(info["objective"]), objective))
        self._example_instances = [i.name for i in view.instances]
        self._example_stages = stages

    def budget(self) -> dict[str, Any] | None:
        """The training budget: the example runs in the prompt (None: zero-shot)."""
        if not self.example_runs:
            return None
        return {
            "examples": len(self.example_runs),
            "train_episodes": len(self.example_runs),
            "train_steps": len(self.example_runs) * self._example_stages,
            "train_instances": list(self._example_instances),
        }

    def messages(self) -> list[BaseMessage]:
        """The chat messages the next decision sends (without re-asks)."""
        assert self.spec is not None and self._schema is not None
        return build_messages(
            self.spec, self.records, method=self.method, schema=self._schema, order=self.history,
            max_history_tokens=self.max_history_tokens, examples=self.example_runs,
        )

    def _act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray | int:
        assert self._chat is not None and self._kind is not None
        self._record_start(info)
        self._notes = notes = self._new_notes()
        messages = self.messages()
        started = time.perf_counter()
        answer = self._chat.ask(
            messages, self._checker(notes), what=f"LLMAgent ({self.model_name}) stage {self.t + 1}",
            reask=self._reask, logger=logger,
        )
        notes.update(
            retries=answer.retries, transport_retries=answer.transport_retries, errors=list(answer.errors),
            prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
        )
        action = answer.value if answer.ok else self._fallback(notes)
        notes["latency_s"] = time.perf_counter() - started
        return action

    def _new_notes(self) -> dict[str, Any]:
        """The notes of a decision before the model answers; ``warnings`` only where the
        model has some (:func:`lossagent_env.chat.model_warnings`)."""
        warnings = model_warnings(self.model)
        return {
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
            **({"warnings": warnings} if warnings else {}),
        }

    def _checker(self, notes: dict[str, Any]) -> Callable[[Any], np.ndarray | int]:
        """The check of a parsed answer: its action, with its rationale (and
        corrections, logged) in ``notes``; ``ValueError`` makes the chat ask again."""
        assert self._kind is not None
        kind, previous = self._kind, self._previous

        def check(parsed: Any) -> np.ndarray | int:
            action, found, corrections = kind.check(parsed, previous)
            notes["corrections"].extend(corrections)
            notes.update(found)
            if corrections:
                logger.warning(
                    "LLMAgent (%s) stage %d: corrected the answer: %s", self.model_name, self.t + 1, corrections
                )
            return action

        return check

    def _reask(self, reason: str, preview: str) -> str:
        """The message that asks again after an unusable answer."""
        assert self._kind is not None
        return (
            f"Your previous answer could not be used: {reason}\n"
            + (f"Your previous answer was: {preview}\n" if preview else "")
            + f"Answer again: {self._kind.wanted}, and a short rationale, in the required format."
        )

    def _fallback(self, notes: dict[str, Any]) -> np.ndarray | int:
        """The previous action, played when the model gave no usable answer (counted
        in ``notes`` and logged)."""
        assert self._kind is not None
        notes["fallback"] = True
        action = self._kind.fallback(self._previous)
        logger.warning(
            "LLMAgent (%s) stage %d: no usable answer after %d re-asks and %d transport retries; "
            "falling back to the previous weights %s.",
            self.model_name, self.t + 1, notes["retries"], notes["transport_retries"], self._kind.shown(action),
        )
        return action

    def _observe(self, action: np.ndarray, reward: float, observation: Any, info: Mapping[str, Any]) -> None:
        assert self._kind is not None
        preset, weights, self._previous = self._kind.played(action)
        record = HistoryRecord.from_info(
            info, self.t + 1, tuple(float(w) for w in weights), preset=preset, reward=float(reward)
        )
        self.records.append(record)

    def __repr__(self) -> str:
        shown = f", examples={self.examples}" if self.examples else ""
        return f"LLMAgent(model={self.model_name!r}, method={self.method!r}, history={self.history!r}{shown})"
