"""One check of episode seeds (lossagent_env.seeds), used by the live env and the replay."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import lossagent_env  # noqa: F401  (registers the ids)
from lossagent_env.seeds import check_seed, check_seeds


@pytest.mark.parametrize("seed", [0, 7, np.int64(7), np.uint8(3)])
def test_an_integer_seed_is_an_int(seed):
    assert check_seed(seed) == int(seed) and type(check_seed(seed)) is int


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (True, TypeError, r"seed=True \(bool\) is not a seed. Allowed: an integer >= 0"),
        (np.bool_(False), TypeError, r"\(bool\) is not a seed"),
        (1.0, TypeError, r"seed=1.0 \(float\) is not a seed"),
        ("1", TypeError, r"seed='1' \(str\) is not a seed"),
        (-1, ValueError, r"seed=-1 is negative. Allowed: an integer >= 0"),
    ],
    ids=["bool", "numpy-bool", "float", "str", "negative"],
)
def test_a_bad_seed_is_refused_naming_it(seed, error, match):
    with pytest.raises(error, match=match):
        check_seed(seed)


def test_a_list_of_seeds_is_ints_each_once():
    assert check_seeds(np.array([3, 1])) == [3, 1]
    with pytest.raises(ValueError, match=r"seeds must be unique; repeated: \[1\]"):
        check_seeds([1, 2, 1])
    with pytest.raises(ValueError, match=r"seeds must be >= 0; got \[-2\]"):
        check_seeds([0, -2])
    with pytest.raises(TypeError, match=r"seed=2.5 \(float\) is not a seed"):
        check_seeds([0, 2.5])


def test_the_live_env_checks_its_reset_seed_as_the_replay_does(tiny_kwargs):
    live = gym.make("LossAgent/SuperResolution-v0", **{**tiny_kwargs, "max_stages": 1})
    replay = gym.make("LossAgent/Tabular-v0", table="smoke", objective="psnr")
    for env in (live, replay):
        with pytest.raises(TypeError, match=r"seed=True \(bool\) is not a seed"):
            env.reset(seed=True)
        with pytest.raises(ValueError, match="seed=-3 is negative"):
            env.reset(seed=-3)
    numpy_seed, int_seed = live.reset(seed=np.int64(5))[1], live.reset(seed=5)[1]
    assert numpy_seed == int_seed
