"""EnvConfig is one pydantic schema: every refusal is a ConfigError that names its field."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from lossagent_env.config import EnvConfig
from lossagent_env.errors import ConfigError
from lossagent_env.objectives import make_objective


@pytest.mark.parametrize(
    "kwargs, field, allowed",
    [
        ({"task": "deblur"}, "task", "'sr'"),
        ({"scale": 3}, "scale", "2 or 4"),
        ({"patch_size": 0}, "patch_size", "a positive integer"),
        ({"patch_size": 33}, "patch_size", "a multiple of scale=2"),
        ({"batch_size": True}, "batch_size", "a positive integer"),
        ({"stage_iters": "5"}, "stage_iters", "a positive integer"),
        ({"lr": float("nan")}, "lr", "a finite number > 0"),
        ({"sigma": 300}, "sigma", "[0, 255]"),
        ({"task": "jpeg", "quality": 0}, "quality", "[1, 95]"),
        ({"divergence_penalty": "x"}, "divergence_penalty", "a finite number"),
        ({"amp": 1}, "amp", "True or False"),
        ({"backbone_kwargs": [1]}, "backbone_kwargs", "a dict"),
        ({"init_checkpoint": 3}, "init_checkpoint", "the path of a state_dict file"),
        ({"dataset": 3}, "dataset", "'skimage'"),
        ({"device": "tpu"}, "device", "'cpu', 'cuda'"),
        ({"losses": "l1"}, "losses", "a list of loss names"),
        ({"losses": ()}, "losses", "a list of loss names"),
    ],
)
def test_a_refused_value_is_a_config_error_with_its_field(kwargs, field, allowed):
    with pytest.raises(ConfigError) as info:
        EnvConfig(**kwargs)
    error = info.value
    assert error.field == field and error.loc == (field,)
    message = str(error)
    assert message.startswith(f"EnvConfig.{field}={kwargs[field]!r}") and "\n" not in message
    assert allowed in message
    assert isinstance(error, ValueError)


def test_an_unknown_field_is_a_config_error_with_a_hint():
    with pytest.raises(ConfigError, match="Did you mean 'patch_size'") as info:
        EnvConfig(patch_sise=32)
    assert info.value.field == "patch_sise"


def test_the_config_stays_a_dataclass_with_its_values():
    config = EnvConfig(losses=["l1", "ssim"], lr=1, task="denoise", scale=3)
    assert config.losses == ("l1", "ssim") and config.scale == 1
    assert "objective" in {f.name for f in dataclasses.fields(EnvConfig)}
    assert config.to_dict()["losses"] == ("l1", "ssim")
    assert EnvConfig(objective=lambda r, t: 0.0).objective is not None


def test_a_config_error_survives_pickling():
    error = ConfigError(("objective", "ssmi"), "No metric named 'ssmi'.")
    again = pickle.loads(pickle.dumps(error))
    assert again.loc == ("objective", "ssmi") and str(again) == str(error)


@pytest.mark.parametrize(
    "spec, part, kind",
    [
        ("psnrr", "psnrr", KeyError),
        ({"psnr": 1.0, "ssmi": 1.0}, "ssmi", KeyError),
        ({"psnr": -1.0}, "psnr", ValueError),
        ({"psnr": 0.0}, None, ValueError),
        (3, None, ValueError),
    ],
    ids=["unknown-name", "unknown-in-dict", "negative-weight", "all-zero", "not-an-objective"],
)
def test_an_objective_error_says_which_part_failed(spec, part, kind):
    with pytest.raises(ConfigError) as info:
        make_objective(spec)
    error = info.value
    assert isinstance(error, kind)
    assert error.field == "objective"
    assert error.loc == (("objective", part) if part else ("objective",))
