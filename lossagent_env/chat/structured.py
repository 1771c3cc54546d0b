"""The one ask-and-retry loop for structured answers from a chat model.

Both the text objectives (a judge's score, a translation into metrics) and the LLM agent
ask a chat model for an answer that must fit a Pydantic schema. :class:`StructuredChat`
does it the same way for all of them:

* **A usable answer** parses into the schema and passes the caller's ``check``; the
  value ``check`` returns is the result.
* **A malformed answer** (unparseable, wrong types, a reply without the expected
  function call, or one that ``check`` rejects with ``ValueError``) is asked again, with
  the reason and a preview of the rejected reply, up to ``max_retries`` times.
* **A transport error** (HTTP 429, 5xx, a timeout, a lost connection) is retried after
  a pause that doubles each time (``backoff_base``, at most ``backoff_max``), up to
  ``transport_retries`` times per request; then the loop stops (``stopped="transport"``).
* **An error a retry cannot fix** (HTTP 400, 401, 404 and other API errors) stops the
  loop at once (``stopped="unfixable"``). Anything else propagates.

Nothing is hidden: every re-ask, transport retry and error is counted in the returned
:class:`Answer` and logged at WARNING on the caller's logger; secret strings (API keys)
are scrubbed from every text that is logged or returned.

Example:
    >>> chat = StructuredChat(model, JudgeAnswer, RetrySettings(max_retries=2))
    >>> answer = chat.ask(messages, check=lambda parsed: parsed.score, what="Judge answer")
    >>> answer.value if answer.ok else answer.errors
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lossagent_env.arguments import NonNegative

__all__ = [
    "METHODS",
    "Answer",
    "RetrySettings",
    "StructuredChat",
    "is_format_error",
    "is_transport_error",
    "is_unfixable_error",
]

_logger = logging.getLogger(__name__)

METHODS = ("function_calling", "json_schema", "json_mode", "text")
"""How the structured answer is obtained: a forced tool call, OpenAI structured output,
JSON mode (LangChain's ``with_structured_output`` methods), or plain text parsed by
``PydanticOutputParser`` (for models without tools)."""

if TYPE_CHECKING:
    Method = str
else:
    Method = Literal[METHODS]

BACKOFF_MAX = 8.0
"""Longest pause between transport retries, seconds (the default)."""

PREVIEW_CHARS = 500
"""Longest error text or reply preview kept in an :class:`Answer` or a re-ask."""


@dataclass
class Answer:
    """The outcome of :meth:`StructuredChat.ask`.

    Attributes:
        value: What ``check`` returned for the accepted answer; None if there was none.
        ok: True if an answer was accepted.
        retries: Re-asks sent after malformed answers.
        transport_retries: Requests repeated after transport errors.
        errors: Why each rejected try failed (scrubbed, at most ``PREVIEW_CHARS`` each).
        stopped: ``"transport"`` (transport retries used up) or ``"unfixable"`` (an API
            error a retry cannot fix) when a request failed for good; None otherwise.
        prompt_tokens: Input tokens over all requests, if the model reports them.
        completion_tokens: Output tokens over all requests, if the model reports them.
    """

    value: Any = None
    ok: bool = False
    retries: int = 0
    transport_retries: int = 0
    errors: list[str] = field(default_factory=list)
    stopped: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def reason(self) -> str:
        """The last error, or ``"no answer"``."""
        return self.errors[-1] if self.errors else "no answer"


def _openai():
    try:
        import openai
    except ImportError:
        return None
    return openai


def is_transport_error(error: BaseException) -> bool:
    """HTTP 429, 5xx, timeouts and lost connections: worth retrying after a pause."""
    openai = _openai()
    types: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
    if openai is not None:
        types += (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError)
    if isinstance(error, types):
        return True
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


def is_format_error(error: BaseException) -> bool:
    """An answer that came back but cannot be used: ask again."""
    if isinstance(error, (OutputParserException, ValidationError, ValueError, KeyError, TypeError)):
        return True
    openai = _openai()
    return openai is not None and isinstance(
        error, (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError)
    )


def is_unfixable_error(error: BaseException) -> bool:
    """Other errors reported by the model's API (e.g. HTTP 400, 401, 404)."""
    if getattr(error, "status_code", None) is not None:
        return True
    openai = _openai()
    return openai is not None and isinstance(error, openai.APIError)


def _clip(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def missing_answer_reason(raw: Any) -> str:
    """Why a reply that raised no parsing error still gave no answer."""
    if isinstance(raw, AIMessage) and raw.invalid_tool_calls:
        call = raw.invalid_tool_calls[0]
        return f"the arguments of the function call are not valid JSON ({call.get('error') or 'unparseable'})"
    if isinstance(raw, AIMessage) and not raw.tool_calls:
        return "the reply held no function call / no answer in the expected format"
    return "the reply held no answer in the expected format"


def reply_preview(raw: Any) -> str:
    """The text and function-call arguments of a reply, shortened."""
    if not isinstance(raw, AIMessage):
        return ""
    parts = []
    if raw.content:
        parts.append(raw.content if isinstance(raw.content, str) else json.dumps(raw.content))
    for call in raw.tool_calls:
        parts.append(json.dumps(call.get("args", {})))
    for bad_call in raw.invalid_tool_calls:
        parts.append(str(bad_call.get("args", "")))
    return _clip(" ".join(parts))


def default_reask(reason: str, preview: str) -> str:
    """The message that asks again after a rejected answer."""
    shown = f"\nYour previous answer was: {preview}" if preview else ""
    return f"Your previous answer could not be used: {reason}.{shown}\nAnswer again in the required format."


class RetrySettings(BaseModel):
    """How :class:`StructuredChat` asks: the answer method, its re-asks and its transport
    retries. Checked once, when built (a text objective or an LLM agent builds it from
    its own arguments with :func:`lossagent_env.arguments.check_arguments`, so a refusal
    names the argument); the chat trusts it."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    method: Method = Field(default="function_calling", description="One of :data:`METHODS`.")
    max_retries: int = Field(default=2, ge=0, description="Re-asks after a malformed answer, per ask.")
    transport_retries: int = Field(default=3, ge=0, description="Retries after a transport error, per request.")
    backoff_base: NonNegative = Field(
        default=0.5, description="First pause after a transport error, seconds; doubled each time."
    )
    backoff_max: NonNegative = Field(default=BACKOFF_MAX, description="Longest pause, seconds.")


class StructuredChat:
    """Asks a chat model for answers of one schema, with counted retries.

    Args:
        model: A LangChain chat model.
        schema: The Pydantic model of the answer.
        settings: The method, re-asks and transport retries (default: ``RetrySettings()``).
        secrets: Returns the secret strings to scrub from texts (API keys).
        sleep: The pause function (tests pass a fake).
    """

    def __init__(
        self,
        model: BaseChatModel,
        schema: type[BaseModel],
        settings: RetrySettings | None = None,
        *,
        secrets: Callable[[], Sequence[str]] = tuple,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.model = model
        self.schema = schema
        self.settings = settings = RetrySettings() if settings is None else settings
        self.secrets = secrets
        self.sleep = sleep
        method = settings.method
        if method == "text":
            from langchain_core.output_parsers import PydanticOutputParser

            self._runnable: Any = model
            self._parser: Any = PydanticOutputParser(pydantic_object=schema)
        else:
            self._runnable = model.with_structured_output(schema, method=method, include_raw=True)
            self._parser = None

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def ask(
        self,
        messages: Sequence[BaseMessage],
        check: Callable[[Any], Any] = lambda parsed: parsed,
        *,
        what: str = "Answer",
        reask: Callable[[str, str], str] = default_reask,
        logger: logging.Logger | None = None,
    ) -> Answer:
        """Ask until an answer is accepted, the re-asks are used up, or a request fails.

        Args:
            messages: The conversation to send.
            check: Called with the parsed answer; returns the value to keep, or raises
                ``ValueError`` whose message says why the answer cannot be used.
            what: How log lines name the answer (e.g. ``"LLMAgent (m) stage 3"``).
            reask: Builds the re-ask message from the reason and a reply preview.
            logger: Where warnings go (default: this module's logger).

        Returns:
            The :class:`Answer`; never raises for a model's failure, only for errors
            that are not the model's (programming errors).
        """
        log = logger or _logger
        answer = Answer()
        extra: list[BaseMessage] = []
        max_retries = self.settings.max_retries
        for attempt in range(max_retries + 1):
            outcome = self._request([*messages, *extra], answer, what, log)
            if outcome is None:
                return answer
            raw, parsed, error = outcome
            if parsed is not None and error is None:
                try:
                    answer.value = check(parsed)
                except ValueError as rejected:
                    error = rejected
                else:
                    answer.ok = True
                    return answer
            reason = _clip(self.scrub(str(error) if error is not None else missing_answer_reason(raw)))
            answer.errors.append(reason)
            if attempt == max_retries:
                break
            answer.retries += 1
            log.warning("%s: malformed answer (%s); asking again (%d/%d).", what, reason, attempt + 1, max_retries)
            extra = [HumanMessage(reask(reason, self.scrub(reply_preview(raw))))]
        return answer

    def _request(
        self, messages: list[BaseMessage], answer: Answer, what: str, log: logging.Logger
    ) -> tuple[Any, Any, BaseException | None] | None:
        """One reply ``(raw, parsed or None, error or None)``, retrying transport errors;
        None when the request failed for good (``answer.stopped`` says why)."""
        settings = self.settings
        for k in range(settings.transport_retries + 1):
            try:
                result = self._runnable.invoke(messages)
            except Exception as e:  # classified below; anything else is re-raised
                text = _clip(self.scrub(f"{type(e).__name__}: {e}"))
                if is_transport_error(e):
                    if k == settings.transport_retries:
                        answer.errors.append(f"transport error after {k} retries: {text}")
                        answer.stopped = "transport"
                        return None
                    delay = min(settings.backoff_base * 2**k, settings.backoff_max)
                    answer.transport_retries += 1
                    log.warning(
                        "%s: %s; retrying in %.3g s (%d/%d).", what, text, delay, k + 1, settings.transport_retries
                    )
                    self.sleep(delay)
                    continue
                if is_format_error(e):
                    return None, None, e
                if is_unfixable_error(e):
                    log.warning("%s: %s", what, text)
                    answer.errors.append(text)
                    answer.stopped = "unfixable"
                    return None
                raise
            if self._parser is not None:
                raw, parsed, error = result, None, None
                try:
                    parsed = self._parser.invoke(raw)
                except (OutputParserException, ValidationError, ValueError) as e:
                    error = e
            else:
                raw, parsed, error = result.get("raw"), result.get("parsed"), result.get("parsing_error")
            _add_usage(raw, answer)
            return raw, parsed, error
        raise AssertionError("unreachable")


def _add_usage(raw: Any, answer: Answer) -> None:
    usage = getattr(raw, "usage_metadata", None)
    if not usage:
        return
    answer.prompt_tokens = (answer.prompt_tokens or 0) + int(usage.get("input_tokens", 0))
    answer.completion_tokens = (answer.completion_tokens or 0) + int(usage.get("output_tokens", 0))
