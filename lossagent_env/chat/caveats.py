"""What a chat model's user should know about how it answers, carried in its ``metadata``.

A model that answers correctly but not as it should (the embedded model's server
without some of its llama-cpp-python patches: slower, or with looser numbers) lists one
line per caveat under :data:`WARNINGS_METADATA_KEY`; the LLM agent records the lines in
its notes, and the benchmark report shows them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WARNINGS_METADATA_KEY", "model_warnings"]

WARNINGS_METADATA_KEY = "lossagent_warnings"
"""Key of a chat model's ``metadata`` under which the model lists what its user should
know about how it answers (the embedded model: its patches that could not apply)."""


def model_warnings(model: Any) -> list[str]:
    """What the user of ``model`` should know about how it answers, one line each.

    The embedded local model lists here the patches of its server that could not apply
    to the installed llama-cpp-python (it answers correctly, slower or with looser
    numbers); other models list nothing. The lines come from the model's ``metadata``
    (:data:`WARNINGS_METADATA_KEY`).
    """
    metadata = getattr(model, "metadata", None)
    lines = metadata.get(WARNINGS_METADATA_KEY) if isinstance(metadata, dict) else None
    return [str(line) for line in lines] if isinstance(lines, (list, tuple)) else []
