"""Named weight presets shared by :class:`~agents.FixedAgent` and the bandit agents.

A preset is a vector of weights in action units (one per loss in ``spec.loss_names``,
its largest entry 1), built from the losses an env has by the role each declares
(``Loss.role``, in ``spec.roles``). See docs/agents.md ("Presets") for the roles, the
named mixes and the fallback where no perceptual loss is present.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from agents.base import AgentSpec

logger = logging.getLogger(__name__)

__all__ = ["MIX_NAMES", "loss_roles", "named_mixes", "weight_presets"]

MIX_NAMES = ("pixel", "pixel+structure", "pixel+edges", "pixel+frequency", "esrgan", "uniform")
"""Names of the mixes, in the order :func:`named_mixes` returns them."""


def loss_roles(spec: AgentSpec) -> dict[str, dict[str, float]]:
    """Each role (``pixel``, ``structure``, ``edges``, ``frequency``, ``perceptual``,
    ``adversarial``) -> ``{loss: share}`` among the env's losses (empty if absent; shares
    within a role sum to 1)."""
    first: dict[str, str] = {}
    for name in spec.loss_names:
        first.setdefault(spec.roles.get(name, ""), name)
    roles = {
        role: ({first[role]: 1.0} if role in first else {})
        for role in ("pixel", "structure", "edges", "frequency", "perceptual", "adversarial")
    }
    if not roles["perceptual"]:
        stand_ins = [first[r] for r in ("edges", "frequency") if r in first]
        roles["perceptual"] = {n: 1.0 / len(stand_ins) for n in stand_ins}
    return roles


def _vector(spec: AgentSpec, parts: Mapping[str, float]) -> np.ndarray:
    vector = np.zeros(spec.n_losses, dtype=np.float64)
    for name, weight in parts.items():
        vector[spec.loss_names.index(name)] += weight
    peak = vector.max(initial=0.0)
    return (vector / peak if peak > 0 else vector).astype(np.float32)


def named_mixes(spec: AgentSpec) -> dict[str, np.ndarray]:
    """The named mixes (docs/agents.md, "Presets") that the env's losses allow, as
    ordered ``{name: float32 (n_losses,)}`` (``esrgan`` needs pixel only: its perceptual
    and adversarial parts fall back or drop as documented)."""
    roles = loss_roles(spec)

    def mix(*parts: tuple[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for role, weight in parts:
            for name, share in roles[role].items():
                out[name] = out.get(name, 0.0) + weight * share
        return out

    mixes: dict[str, np.ndarray] = {}
    if roles["pixel"]:
        mixes["pixel"] = _vector(spec, mix(("pixel", 1.0)))
        if roles["structure"]:
            mixes["pixel+structure"] = _vector(spec, mix(("pixel", 1.0), ("structure", 1.0)))
        if roles["edges"]:
            mixes["pixel+edges"] = _vector(spec, mix(("pixel", 1.0), ("edges", 0.5)))
        if roles["frequency"]:
            mixes["pixel+frequency"] = _vector(spec, mix(("pixel", 1.0), ("frequency", 0.5)))
        mixes["esrgan"] = _vector(spec, mix(("pixel", 1.0), ("perceptual", 1.0), ("adversarial", 0.1)))
        if not roles["perceptual"]:
            logger.info("Preset 'esrgan': no perceptual loss or stand-in here; dropped its part.")
    mixes["uniform"] = np.ones(spec.n_losses, dtype=np.float32)
    return mixes


def weight_presets(spec: AgentSpec) -> dict[str, np.ndarray]:
    """Every preset for ``spec`` as ordered ``{name: float32 (n_losses,)}``: each single
    loss (named after it), then :func:`named_mixes`, a mix equal to an earlier preset
    dropped (``pixel`` equals the single ``l1``), so no two arms are the same vector."""
    presets: dict[str, np.ndarray] = {}
    for i, name in enumerate(spec.loss_names):
        vector = np.zeros(spec.n_losses, dtype=np.float32)
        vector[i] = 1.0
        presets[name] = vector
    for name, vector in named_mixes(spec).items():
        if not any(np.array_equal(vector, v) for v in presets.values()):
            presets[name] = vector
    return presets
