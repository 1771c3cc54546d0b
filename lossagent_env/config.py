"""Configuration of a LossAgent environment: one dataclass, validated by pydantic on creation.

:class:`EnvConfig` is a pydantic dataclass: ``dataclasses.fields``, ``to_dict`` and
``gym.make(id, **fields)`` work as for any dataclass, and every refused value raises
:class:`~lossagent_env.errors.ConfigError`, whose ``field`` names the key and whose
message is one line ending in what is allowed (each field's :class:`Allowed` text).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass, is_pydantic_dataclass

from lossagent_env.device import check_device
from lossagent_env.errors import ConfigError, UnknownNameError
from lossagent_env.registry import unknown_name_message
from lossagent_env.tasks import TASKS

__all__ = ["Allowed", "EnvConfig"]


@dataclasses.dataclass(frozen=True)
class Allowed:
    """What a field accepts, in words: the end of the message that refuses a value."""

    text: str


PositiveInt = Annotated[int, Field(ge=1), Allowed("a positive integer")]
Side = Annotated[int, Field(ge=1), Allowed("a positive integer, a multiple of scale")]
if TYPE_CHECKING:
    TaskName = str  # the names are known at run time only, from the TASKS registry
else:
    TaskName = Literal[tuple(TASKS.names())]

_C = TypeVar("_C")


def _one_line_errors(cls: type[_C]) -> type[_C]:
    """Make ``cls(...)`` raise :class:`ConfigError` (one line, with the field) instead
    of pydantic's multi-line ``ValidationError``."""
    validate = cls.__init__

    @functools.wraps(validate)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as e:
            raise _config_error(cls, e, kwargs) from None

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


def _config_error(cls: type, error: ValidationError, given: dict[str, Any]) -> ConfigError:
    """The first refusal of ``error`` as a :class:`ConfigError` (an unknown key first:
    it is often a typo of a key that another error is about)."""
    errors = error.errors()
    first = next((e for e in errors if e["type"] == "unexpected_keyword_argument"), errors[0])
    name = first["loc"][0] if first["loc"] else None
    fields = [f.name for f in dataclasses.fields(cls)]
    if first["type"] == "unexpected_keyword_argument":
        return UnknownNameError((str(name),), unknown_name_message(f"{cls.__name__} field", str(name), fields))
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    if name not in fields:  # e.g. too many positional arguments
        return ConfigError((), f"{cls.__name__}: {first['msg']}. Allowed: keyword arguments {fields}")
    if isinstance(cause, Exception):  # a validator's own message names the field
        return ConfigError((name,), str(cause))
    assert is_pydantic_dataclass(cls)  # _one_line_errors decorates pydantic dataclasses
    info = cls.__pydantic_fields__[name]
    allowed = next((m.text for m in info.metadata if isinstance(m, Allowed)), first["msg"].lower())
    value = given.get(name, first.get("input"))
    return ConfigError((name,), f"{cls.__name__}.{name}={value!r} is not {allowed}.")


def _device(value: Any) -> str:
    return check_device(value, "EnvConfig.device")


@_one_line_errors
@dataclass(config=ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True))
class EnvConfig:
    """Everything that defines one environment. Every field can be passed to ``gym.make``.

    The env ids fix ``task``; the other fields keep their defaults unless given.

    Raises:
        ConfigError: A refused value or an unknown field (a ``ValueError``; an unknown
            field is a ``KeyError`` too); ``field`` names it.
    """

    task: Annotated[TaskName, Allowed(f"one of {TASKS.names()}")] = "sr"
    """Degradation to undo: ``"sr"`` (bicubic down-sampling), ``"denoise"`` (Gaussian
    noise) or ``"jpeg"`` (JPEG compression)."""

    objective: Any = "psnr"
    """What the agent optimises: a metric name, a ``{metric: weight}`` dict, an
    ``Objective``, or a callable ``(restored, target) -> float`` (higher is better).
    Checked when the env is made (see :func:`lossagent_env.objectives.make_objective`)."""

    losses: Annotated[
        tuple[Any, ...] | None,
        Field(strict=False, min_length=1),
        Allowed("a list of loss names or {'type': name, ...} specs, e.g. ['l1', 'ssim'], or None"),
    ] = None
    """The loss repository: names or ``{"type": name, **kwargs}`` specs, in action order.
    ``None`` means every loss that needs no downloaded weights."""

    backbone: Any = "tiny"
    """Restoration network: a registered name (``"tiny"``, ``"edsr"``) or an ``nn.Module``."""

    backbone_kwargs: Annotated[
        dict[str, Any], Allowed("a dict of options of the backbone, e.g. {'channels': 64}")
    ] = field(default_factory=dict)
    """Extra keyword arguments for a named backbone (e.g. ``{"channels": 64}``)."""

    dataset: Annotated[
        str, Allowed("'skimage', 'skimage:<group>', an image folder, or 'paired:<lr_dir>:<hr_dir>'")
    ] = "skimage"
    """``"skimage"`` (colour photographs shipped with scikit-image, offline),
    ``"skimage:<group>"`` (a group of scikit-image's pictures,
    :data:`lossagent_env.data.SKIMAGE_GROUPS`, for instances that differ in content), a
    folder of images (DIV2K-style), or ``"paired:<lr_dir>:<hr_dir>"`` for paired LR/HR
    folders."""

    scale: Annotated[int, Allowed("2 or 4")] = 2
    """Super-resolution factor, 2 or 4 (``task="sr"`` only; 1 for the other tasks)."""

    sigma: Annotated[float, Field(ge=0, le=255, allow_inf_nan=False), Allowed("a number in [0, 255]")] = 25.0
    """Noise standard deviation on the 0-255 scale (``task="denoise"`` only)."""

    quality: Annotated[int, Field(ge=1, le=95), Allowed("an integer in [1, 95]")] = 20
    """JPEG quality, 1-95 (``task="jpeg"`` only)."""

    patch_size: Side = 32
    """Side of a training target patch in pixels (the network input is ``patch_size /
    scale`` for super-resolution)."""

    batch_size: PositiveInt = 4
    """Patches per training iteration."""

    stage_iters: PositiveInt = 20
    """Optimiser iterations per stage (per ``env.step``)."""

    max_stages: PositiveInt = 5
    """Stages per episode; the episode is truncated after this many steps."""

    lr: Annotated[float, Field(gt=0, allow_inf_nan=False), Allowed("a finite number > 0")] = 1e-3
    """Adam learning rate of the restoration network."""

    device: Annotated[str, BeforeValidator(_device)] = "cpu"
    """``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"auto"`` (CUDA when available)."""

    amp: Annotated[bool, Allowed("True or False")] = False
    """Mixed precision (bfloat16 autocast) for training on CUDA; ignored on CPU."""

    eval_images: PositiveInt = 4
    """Number of evaluation crops the objective is measured on."""

    eval_size: Side = 96
    """Side of an evaluation target crop in pixels."""

    test_images: Annotated[PositiveInt | None, Allowed("None or an integer >= 1")] = None
    """Number of crops of the held-out test split (``env.unwrapped.measure(split="test")``,
    which tables store for scoring and no agent sees); ``None``: ``eval_images``. The
    observation, the reward and ``info`` never read it."""

    init_checkpoint: Annotated[str | os.PathLike[str] | None, Allowed("None or the path of a state_dict file")] = None
    """Path of a network ``state_dict`` to start every episode from, instead of a
    seeded initialisation."""

    divergence_penalty: Annotated[
        float, Field(allow_inf_nan=False), Allowed("a finite number (the reward of a diverged stage), e.g. -1.0")
    ] = -1.0
    """Reward of a stage whose training diverged (non-finite loss or parameters)."""

    def __post_init__(self) -> None:
        """The checks that read two fields: ``scale`` with ``task``, sides with ``scale``."""
        if self.task == "sr" and self.scale not in (2, 4):
            raise ConfigError(("scale",), f"EnvConfig.scale={self.scale!r} is not allowed. Allowed: 2 or 4.")
        if self.task != "sr":
            self.scale = 1
        for name in ("patch_size", "eval_size"):
            value = getattr(self, name)
            if value % self.scale or value // self.scale < 4:
                raise ConfigError(
                    (name,),
                    f"EnvConfig.{name}={value!r} is not allowed. Allowed: a multiple of "
                    f"scale={self.scale} and at least {4 * self.scale}.",
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain, printable values (objects are shown by their ``repr``)."""
        plain = (str, int, float, bool, type(None), dict, list, tuple)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {name: value if isinstance(value, plain) else repr(value) for name, value in values.items()}
