"""A small name -> object registry shared by losses, metrics, backbones and tasks."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps short lowercase names to objects (usually classes or factories).

    Registering a name twice raises; looking up an unknown name raises a ``KeyError``
    that suggests the closest known name.

    Example:
        >>> BACKBONES = Registry("backbone")
        >>> @BACKBONES.register("tiny")
        ... class Tiny: ...
        >>> BACKBONES.get("tiny") is Tiny
        True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        if obj is None:

            def decorator(item: T) -> T:
                self._add(name, item)
                return item

            return decorator
        self._add(name, obj)
        return obj

    def _add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise KeyError(f"A {self.kind} named {name!r} is already registered.")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises:
            KeyError: ``name`` is unknown; the message suggests the closest names.
        """
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(unknown_name_message(self.kind, name, self._items)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self):
        return self._items.items()


def unknown_name_message(kind: str, name: object, known) -> str:
    """``No loss named 'l2'. Did you mean 'l1'? Known: [...]``."""
    known = sorted(known)
    hint = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
    return f"No {kind} named {name!r}.{did_you_mean} Known: {known}"
