"""The one check of a weight vector: the action of a LossAgent env.

The env (:meth:`LossAgentEnv.step`), the agents' weight arguments and the episode loop
all call :func:`check_weights`, so an action is accepted or refused, and explained,
the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_weights"]


def check_weights(value: Any, names: Sequence[str], what: str = "action") -> np.ndarray:
    """``value`` as a ``float32`` vector with one entry in ``[0, 1]`` per loss.

    Args:
        value: Anything ``np.asarray`` turns into numbers.
        names: The loss names, in the order of the vector.
        what: How the message names the value (``"action"``, ``"initial_weights"``).

    Returns:
        ``float32`` array of shape ``(len(names),)``.

    Raises:
        ValueError: Not numbers, the wrong shape, or entries that are not finite or
            outside ``[0, 1]``; the message names the bad entries and what is allowed.
    """
    names = tuple(names)
    n = len(names)
    allowed = f"a float vector of shape ({n},) with entries in [0, 1], one per loss {names}"
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"dtype {array.dtype}")
        array = array.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Invalid {what} {value!r}: not numbers ({e}). Expected {allowed}.") from None
    if array.shape != (n,):
        raise ValueError(f"Invalid {what}: shape {array.shape} ({array.size} entries). Expected {allowed}.")
    bad = ~np.isfinite(array) | (array < 0) | (array > 1)
    if bad.any():
        entries = ", ".join(f"{names[i]}={float(array[i])!r}" for i in np.flatnonzero(bad))
        raise ValueError(f"Invalid {what}: entries outside [0, 1]: {entries}. Expected {allowed}.")
    return array.astype(np.float32)
