"""Scripted LangChain chat models and helpers shared by the tests (no network)."""

from __future__ import annotations

import base64
import io

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from PIL import Image
from pydantic import Field

PNG_DATA_URL = "data:image/png;base64,"


class ScriptedChatModel(GenericFakeChatModel):
    """Replies from a script and records every request; tool binding is a no-op.

    An exception in the script is raised instead of replying (after the request is
    recorded), as a failing client would.
    """

    seen: list = Field(default_factory=list)

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        reply = next(self.messages)
        if isinstance(reply, BaseException):
            raise reply
        self.messages = iter([reply, *self.messages])  # put it back for the base class
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def tool_message(name: str, args, *, id: str = "c", **fields) -> AIMessage:
    """An assistant message calling tool ``name`` with ``args`` (``fields``: more of the message)."""
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": id}], **fields)


def png_from_data_url(url: str) -> Image.Image:
    """The image in a ``data:image/png;base64,`` URL, checking it really is a PNG."""
    assert url.startswith(PNG_DATA_URL)
    data = base64.b64decode(url[len(PNG_DATA_URL) :])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))
