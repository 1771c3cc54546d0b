"""Episode seeds: the one check of a seed and of a list of seeds.

The envs' ``reset(seed=...)`` (live and table replay), a replay's ``seeds=``, a table's
specification, agents' training seeds and a benchmark suite's seeds all call these, so a
seed is accepted or refused, and explained, the same way everywhere.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_seed", "check_seeds"]


def _integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` as an ``int`` if it is an integer ``>= 0`` (Python or NumPy); messages
    name it ``what``.

    Raises:
        TypeError: A bool, float, string or any other type (``True`` would otherwise
            play seed 1).
        ValueError: A negative integer.
    """
    if not _integer(seed):
        raise TypeError(f"{what}={seed!r} ({type(seed).__name__}) is not a seed. Allowed: an integer >= 0.")
    if seed < 0:
        raise ValueError(f"{what}={seed!r} is negative. Allowed: an integer >= 0.")
    return int(seed)


def check_seeds(seeds: Sequence[Any], what: str = "seeds") -> list[int]:
    """``seeds`` as a list of ``int`` if each passes :func:`check_seed` and appears once
    (checked in linear time); messages name the list ``what`` (e.g. ``"seeds=[1, 1]"``).

    Raises:
        TypeError: A seed that is not an integer.
        ValueError: A repeated or negative seed; the message names them.
    """
    for seed in seeds:
        if not _integer(seed):
            check_seed(seed)  # raises, naming it
    repeated = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
    if repeated:
        raise ValueError(f"{what} must be unique; repeated: {repeated[:10]}")
    negative = [s for s in seeds if s < 0]
    if negative:
        raise ValueError(f"{what} must be >= 0; got {negative[:10]}")
    return [int(s) for s in seeds]
