"""What a patch of llama-cpp-python is, and the checks that decide whether it may apply.

Nothing here imports llama_cpp at import time: the caller's process reads the patches'
names and effects, and only the server's process applies them.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["TESTED_VERSIONS", "Patch", "absent", "installed_version", "missing_in_source", "unset_in_init"]

TESTED_VERSIONS = ("0.3.36",)
"""The llama-cpp-python releases the patches were tested with (``constraints.txt`` pins
the first); on any other release none of them applies."""


@dataclass(frozen=True)
class Patch:
    """One patch of llama-cpp-python's private internals.

    Attributes:
        name: Its name, the keyword of :class:`~lossagent_env.chat.local.LocalLLMServer`
            that asks for it (``"bounded_numbers"``).
        effect: What the server does differently without it, for the warning line.
        internals: Returns the internals it replaces or reads that this llama-cpp-python
            lacks or has changed (an empty list when all are as tested).
        install: Applies it in this process (the server's).
        needs: Patches that must be applied before it.
    """

    name: str
    effect: str
    internals: Callable[[], list[str]]
    install: Callable[[], None]
    needs: tuple[str, ...] = ()

    def why_not(self, applied: Collection[str] = ()) -> str | None:
        """Why this patch cannot apply here (after ``applied``), or None when it can.

        Its release must be one of :data:`TESTED_VERSIONS`, every internal must be there,
        and the patches it needs applied.
        """
        version = installed_version()
        if version not in TESTED_VERSIONS:
            return f"llama-cpp-python {version} is not {' or '.join(TESTED_VERSIONS)}, the release it was tested with"
        missing = self.internals()
        if missing:
            return f"llama-cpp-python {version} lacks or has changed {', '.join(missing)}"
        unmet = [name for name in self.needs if name not in applied]
        if unmet:
            return f"it needs {', '.join(unmet)}"
        return None


def installed_version() -> str:
    """The release of llama-cpp-python this process imports (``llama_cpp.__version__``)."""
    import llama_cpp

    return str(getattr(llama_cpp, "__version__", "of unknown version"))


def _resolve(dotted: str) -> Any:
    """``llama_cpp.<dotted>``: a submodule, then attributes (raises AttributeError/ImportError)."""
    parts = dotted.split(".")
    module: Any = importlib.import_module("llama_cpp")
    for i, part in enumerate(parts):
        if not hasattr(module, part) and inspect.ismodule(module):
            try:  # a submodule not imported yet, e.g. llama_cpp.llama_grammar
                module = importlib.import_module(f"llama_cpp.{'.'.join(parts[: i + 1])}")
                continue
            except ImportError:
                pass
        module = getattr(module, part)
    return module


def absent(*dotted: str) -> list[str]:
    """The names among ``dotted`` (relative to ``llama_cpp``) that cannot be found."""
    missing = []
    for name in dotted:
        try:
            _resolve(name)
        except (AttributeError, ImportError):
            missing.append(name)
    return missing


def _source(dotted: str) -> str | None:
    try:
        return inspect.getsource(_resolve(dotted))
    except (AttributeError, ImportError, OSError, TypeError):  # no such name, or no source
        return None


def unset_in_init(cls: str, *attributes: str) -> list[str]:
    """The ``attributes`` that ``llama_cpp.<cls>.__init__`` does not assign to ``self``.

    Instance attributes exist only once an object is built (a model loaded), so their
    presence is read from the source of the constructor.
    """
    source = _source(f"{cls}.__init__")
    if source is None:
        return [f"{cls}.__init__ (its source)"]
    return [
        f"{cls}.{name}" for name in attributes if not re.search(rf"\bself\.{re.escape(name)}\s*(:[^=\n]*)?=(?!=)", source)
    ]


def missing_in_source(dotted: str, what: str, *snippets: str) -> list[str]:
    """``[what]`` when the source of ``llama_cpp.<dotted>`` lacks one of ``snippets``, else ``[]``."""
    source = _source(dotted)
    if source is None or not all(snippet in source for snippet in snippets):
        return [what]
    return []
