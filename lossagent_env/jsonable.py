"""One conversion of Python, NumPy and torch values into JSON types.

Agent notes, ``info`` entries and benchmark rows hold NumPy scalars and arrays, tuples
and now and then a 0-dimensional torch tensor; :func:`jsonable` turns them into the
types ``json.dumps`` writes. Anything else is an error, not a silent ``str(value)``:
a row that cannot be read back the way it was written is a bug to fix where the
value is made.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars/arrays, tuples and torch scalars turned into JSON types.

    Mappings become dicts with ``str`` keys and lists and tuples become lists, converted
    element by element. Floats are kept as they are, NaN and infinities included.

    Raises:
        TypeError: ``value`` holds something JSON cannot represent (named in the message).

    Example:
        >>> jsonable({"w": np.float32(0.5), "shape": (2, 3), "a": np.arange(2)})
        {'w': 0.5, 'shape': [2, 3], 'a': [0, 1]}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    # A tensor exists only if torch was imported, so torch is looked up, never imported.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.item()
    raise TypeError(
        f"Cannot convert {type(value).__name__} to JSON: {value!r}. Allowed: None, bool, "
        "int, float, str, list, tuple, dict, NumPy scalars and arrays, 0-dimensional "
        "torch tensors."
    )
