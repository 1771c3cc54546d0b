"""The LLM loss agent (LangChain), its prompt and its answer schema.

``lossagent_env.chat.local`` (the embedded local model) is imported only when
``LLMAgent(model="local")`` builds its model, never by importing this package.
"""

from __future__ import annotations

from agents.llm.agent import BASE_URL_ENV_VAR, METHODS, MODEL_ENV_VAR, LLMAgent, resolve_chat_model
from agents.llm.prompts import HistoryRecord, PromptParts, build_messages, render_parts
from agents.llm.schema import make_answer_schema, validate_answer

__all__ = [
    "BASE_URL_ENV_VAR",
    "METHODS",
    "MODEL_ENV_VAR",
    "HistoryRecord",
    "LLMAgent",
    "PromptParts",
    "build_messages",
    "make_answer_schema",
    "render_parts",
    "resolve_chat_model",
    "validate_answer",
]
