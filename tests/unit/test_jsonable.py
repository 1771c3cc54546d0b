"""jsonable: NumPy, tuples and torch scalars become JSON types; anything else is an error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lossagent_env.jsonable import jsonable


def test_converts_numpy_tuples_torch_scalars_and_keys():
    value = {
        "w": np.float32(0.5),
        "n": np.int64(3),
        "ok": np.bool_(True),
        "a": np.arange(3),
        "shape": (2, (3, 4)),
        "t": torch.tensor(1.5),
        7: [None, "s", 1, 2.0, False],
    }
    out = jsonable(value)
    assert out == {
        "w": 0.5, "n": 3, "ok": True, "a": [0, 1, 2], "shape": [2, [3, 4]], "t": 1.5,
        "7": [None, "s", 1, 2.0, False],
    }
    assert type(out["w"]) is float and type(out["n"]) is int and type(out["ok"]) is bool
    json.dumps(out)


def test_keeps_nan_and_infinity():
    out = jsonable([math.nan, np.float64(math.inf)])
    assert math.isnan(out[0]) and out[1] == math.inf


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, b"bytes", torch.ones(2), {"deep": [complex(1, 2)]}],
    ids=["object", "set", "bytes", "tensor", "nested-complex"],
)
def test_what_json_cannot_hold_raises_type_error(value):
    with pytest.raises(TypeError, match="Cannot convert"):
        jsonable(value)
