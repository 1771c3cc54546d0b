"""The embedded model server's patches of llama-cpp-python's private internals.

Each patch is a module of this package (``bounded_numbers``: a forced tool call's grammar
honours the bounds of numbers; ``grammar_first``: greedy constrained sampling checks the
best token first; ``jump_forward``: the keys of a forced tool call are written ahead, in
batches), applied in the server's process only, before it loads the model; each module
says what it replaces (``internals``).

A patch applies only on a llama-cpp-python release it was tested with
(:data:`TESTED_VERSIONS`; ``constraints.txt`` pins it) whose internals are all as it
expects (:meth:`Patch.why_not`). Where one cannot apply, the server keeps
llama-cpp-python's own code for that part and answers correctly, only slower or with
looser numbers; :func:`warning_line` says so in one line, which the caller logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lossagent_env.chat.local.patches import bounded_numbers, grammar_first, jump_forward
from lossagent_env.chat.local.patches.base import TESTED_VERSIONS, Patch, installed_version

__all__ = ["PATCHES", "TESTED_VERSIONS", "Patch", "apply_patches", "check_names", "installed_version", "warning_line"]

PATCHES: dict[str, Patch] = {p.name: p for p in (bounded_numbers.PATCH, grammar_first.PATCH, jump_forward.PATCH)}
"""Name -> patch, in the order they are applied."""


def check_names(names: Iterable[str]) -> list[str]:
    """``names`` in the order of :data:`PATCHES`.

    Raises:
        ValueError: A name is not a patch (the message lists them).
    """
    names = list(names)
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise ValueError(f"Unknown llama-cpp-python patch {unknown[0]!r}. Known: {list(PATCHES)}")
    return [n for n in PATCHES if n in names]


def apply_patches(names: Iterable[str]) -> dict[str, str | None]:
    """Apply the patches ``names`` in this process, each one only where it can apply.

    Returns:
        Name -> None where the patch is applied, else why it is not (the stock code
        runs there). A patch that fails while it installs counts as not applied.

    Raises:
        ValueError: An unknown name.
    """
    outcome: dict[str, str | None] = {}
    for name in check_names(names):
        patch = PATCHES[name]
        reason = patch.why_not(applied=[n for n, why in outcome.items() if why is None])
        if reason is None:
            try:
                patch.install()
            except Exception as e:  # reported to the caller; the stock code keeps serving
                reason = f"it failed while installing: {type(e).__name__}: {e}"
        outcome[name] = reason
    return outcome


def warning_line(outcome: Mapping[str, str | None]) -> str | None:
    """One line for the user about the patches in ``outcome`` that are not applied, or None.

    Example: ``"The embedded model's server runs without its llama-cpp-python patches
    grammar_first, jump_forward (llama-cpp-python 0.3.37 is not 0.3.36, the release they
    were tested with): constrained answers are sampled more slowly; ... Install
    llama-cpp-python==0.3.36 (constraints.txt) to apply them."``
    """
    failed = {name: why for name, why in outcome.items() if why is not None}
    if not failed:
        return None
    reasons: dict[str, list[str]] = {}
    for name, why in failed.items():
        reasons.setdefault(why, []).append(name)
    if len(reasons) == 1:
        causes = next(iter(reasons))
    else:
        causes = "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())
    effects = "; ".join(PATCHES[name].effect for name in failed if name in PATCHES)
    return (
        f"The embedded model's server runs without its llama-cpp-python patches {', '.join(failed)} ({causes}), "
        f"so {effects}. Install llama-cpp-python=={TESTED_VERSIONS[0]} (constraints.txt) to apply them."
    )
