"""Arguments of the wrappers in lossagent_env.wrappers, refused before anything is written."""

from __future__ import annotations

import pytest

from lossagent_env.wrappers import TensorBoardLogger
from tests.toy_env import ToyLossEnv


@pytest.mark.parametrize("image_every", [True, -1, 1.5, "2"], ids=["bool", "negative", "float", "str"])
def test_image_every_must_be_an_integer_of_at_least_0(tmp_path, image_every):
    with pytest.raises(ValueError, match=rf"image_every={image_every!r} is not allowed. Allowed: an integer >= 0"):
        TensorBoardLogger(ToyLossEnv(), tmp_path / "tb", image_every=image_every)
    assert not (tmp_path / "tb").exists()
