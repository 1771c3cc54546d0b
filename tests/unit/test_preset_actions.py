"""PresetActions: a Discrete action space over named weight presets."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

import lossagent_env  # noqa: F401  (registers the env ids)
from lossagent_env.wrappers import PresetActions

LOSSES = ["l1", "ssim", "gradient"]
PRESETS = {"pixel": {"l1": 1.0}, "mix": [1.0, 0.5, 0.25]}


@pytest.fixture
def make_env(tiny_kwargs):
    def make():
        return gym.make("LossAgent/SuperResolution-v0", **{**tiny_kwargs, "losses": LOSSES})

    return make


def test_action_i_plays_preset_i_and_names_it(make_env):
    env = PresetActions(make_env(), PRESETS)
    assert env.action_space == gym.spaces.Discrete(2)
    assert env.preset_names == ("pixel", "mix")
    expected = np.array([[1, 0, 0], [1, 0.5, 0.25]], np.float32)
    assert env.preset_weights.dtype == np.float32
    assert np.array_equal(env.preset_weights, expected)
    assert not env.preset_weights.flags.writeable

    raw = make_env()
    obs, info = env.reset(seed=0)
    raw_obs, raw_info = raw.reset(seed=0)
    assert info.pop("preset") is None
    assert data_equivalence((obs, info), (raw_obs, raw_info), exact=True)
    for action in (1, np.int64(0), np.array(1)):
        out = env.step(action)
        raw_out = raw.step(expected[int(action)])
        assert out[-1].pop("preset") == env.preset_names[int(action)]
        assert data_equivalence(out, raw_out, exact=True)


@pytest.mark.parametrize("action", [2, -1, 1.5, 1.0, "a", True, None, np.array([1])])
def test_an_invalid_action_raises_and_leaves_the_env_untouched(make_env, action):
    env, fresh = PresetActions(make_env(), PRESETS), PresetActions(make_env(), PRESETS)
    env.reset(seed=3)
    fresh.reset(seed=3)
    with pytest.raises(ValueError, match=r"Allowed: an integer in \[0, 2\).*0='pixel', 1='mix'"):
        env.step(action)
    assert data_equivalence(env.step(1), fresh.step(1), exact=True)


@pytest.mark.parametrize(
    ("presets", "error", "match"),
    [
        ({}, ValueError, "No presets given"),
        ({"p": {"l2": 1.0}}, KeyError, "Preset 'p': No loss named 'l2'. Did you mean 'l1'?"),
        ({"p": [1.0, 0.0]}, ValueError, r"Preset 'p' has 2 weights; the env has 3 losses"),
        ({"p": {"ssim": 1.5}}, ValueError, r"weight of loss 'ssim' is 1.5. Allowed: a number in \[0, 1\]"),
        ({"p": [1.0, -0.1, 0.0]}, ValueError, r"weight of loss 'ssim' is -0.1"),
        ({"p": {"l1": float("nan")}}, ValueError, r"weight of loss 'l1' is nan"),
        ({"p": {"l1": True}}, ValueError, r"weight of loss 'l1' is True"),
        ({"p": "l1"}, ValueError, r"Allowed: a \{loss: weight\} dict or a vector of 3 weights"),
        ({"": {"l1": 1.0}}, ValueError, "Preset name '' is not allowed"),
        ([("a", {"l1": 1.0}), ("a", {"ssim": 1.0})], ValueError, "Preset name 'a' appears twice"),
    ],
    ids=["empty", "unknown-loss", "length", "above-1", "negative", "nan", "bool", "not-weights",
         "empty-name", "duplicate"],
)
def test_bad_presets_raise_naming_the_value_and_what_is_allowed(make_env, presets, error, match):
    with pytest.raises(error, match=match):
        PresetActions(make_env(), presets)


def test_the_spec_recreates_the_wrapper(make_env):
    env = PresetActions(make_env(), PRESETS)
    spec = env.spec
    assert spec.additional_wrappers[-1].kwargs == {"presets": PRESETS}
    again = gym.make(spec)
    assert isinstance(again, PresetActions)
    assert again.preset_names == env.preset_names
    assert np.array_equal(again.preset_weights, env.preset_weights)
    assert data_equivalence(again.reset(seed=1), env.reset(seed=1), exact=True)
    assert data_equivalence(again.step(1), env.step(1), exact=True)


@pytest.mark.parametrize("presets", [None, 3, "pixel"], ids=["none", "int", "str"])
def test_presets_of_the_wrong_type_are_refused(make_env, presets):
    with pytest.raises(TypeError, match=rf"presets={presets!r} \({type(presets).__name__}\) is not allowed. Allowed: an ordered mapping"):
        PresetActions(make_env(), presets)


def test_an_env_that_already_plays_presets_is_refused(make_env):
    env = PresetActions(make_env(), PRESETS)
    with pytest.raises(TypeError, match=r"has action space Discrete\(2\). It already plays presets \['pixel', 'mix'\]"):
        PresetActions(env, PRESETS)
    with pytest.raises(TypeError, match=r"PresetActions needs a LossAgent env \(with loss_names\)"):
        PresetActions(gym.make("CartPole-v1"), PRESETS)
