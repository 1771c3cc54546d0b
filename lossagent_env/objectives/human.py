"""Human feedback as the objective: a person rates every stage from 1 to 10.

:class:`HumanObjective` saves a comparison image of every stage and asks a rater
(:class:`TerminalRater`, :class:`FileRater`, or any ``fn(image_path, stage) -> (score,
comment or None)``); the score is the metric ``"human"`` and ``J``, the comment the
feedback. See docs/objectives.md ("Human feedback").

Example::

    HumanObjective(rater=lambda path, stage: (7, "sharper please"), out_dir="ratings")
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F

from lossagent_env.objectives.base import Objective, ObjectiveResult

__all__ = ["HUMAN_METRIC", "FileRater", "HumanObjective", "TerminalRater", "check_score", "comparison_image"]

logger = logging.getLogger(__name__)

HUMAN_METRIC = "human"
"""Metric name of the person's score in ``info["metrics"]``."""

SCORE_RANGE = (1.0, 10.0)

Rater = Callable[[str, int], "tuple[float, str | None]"]


def check_score(score: object) -> float:
    """The score as a float, if it is a finite number in ``[1, 10]``.

    Raises:
        ValueError: Anything else; the message names the value and the range.
    """
    if isinstance(score, bool) or not isinstance(score, numbers.Real):
        raise ValueError(f"Score {score!r} is not a number. Allowed: a number from 1 to 10.")
    value = float(score)
    if not math.isfinite(value) or not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
        raise ValueError(f"Score {score!r} is out of range. Allowed: a number from 1 to 10.")
    return value


def _check_comment(comment: object) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise ValueError(f"Comment {comment!r} is a {type(comment).__name__}. Allowed: a string or None.")
    text = " ".join(comment.split())
    return text or None


def comparison_image(restored: torch.Tensor, target: torch.Tensor, degraded: torch.Tensor | None, caption: str) -> Any:
    """A PIL image: degraded | restored | target, with ``caption`` written above.

    Args:
        restored: ``(C, H, W)`` in ``[0, 1]``.
        target: ``(C, H, W)`` in ``[0, 1]``.
        degraded: ``(C, h, w)`` in ``[0, 1]`` (nearest up-sampled to ``H, W``) or None.
        caption: Text drawn in a band above the images (may hold newlines).
    """
    from PIL import Image, ImageDraw

    height, width = restored.shape[-2:]
    panels = []
    if degraded is not None:
        panels.append(F.interpolate(degraded[None].float(), size=(height, width), mode="nearest")[0])
    panels += [restored.float(), target.float()]
    row = torch.cat([p.clamp(0, 1) for p in panels], dim=-1)
    if row.shape[0] == 1:
        row = row.expand(3, -1, -1)
    array = row.mul(255).round().to(torch.uint8).cpu().numpy().transpose(1, 2, 0)
    lines = caption.count("\n") + 1
    band = 12 * lines + 8
    canvas = Image.new("RGB", (array.shape[1], array.shape[0] + band), "white")
    canvas.paste(Image.fromarray(np.ascontiguousarray(array)), (0, band))
    ImageDraw.Draw(canvas).multiline_text((4, 4), caption, fill="black", spacing=2)
    return canvas


class TerminalRater:
    """Asks a person on a terminal for a score and a comment.

    Args:
        default: Score used when the person just presses Enter (1 to 10).
        input_stream: Where answers are read (default ``sys.stdin``).
        output_stream: Where questions are written (default ``sys.stdout``).

    Raises:
        ValueError: ``default`` is not a number from 1 to 10.
    """

    def __init__(self, default: float = 5.0, input_stream: IO[str] | None = None, output_stream: IO[str] | None = None):
        self.default = check_score(default)
        self.input_stream = input_stream
        self.output_stream = output_stream

    def _ask(self, question: str) -> str:
        out = self.output_stream or sys.stdout
        inp = self.input_stream or sys.stdin
        out.write(question)
        out.flush()
        line = inp.readline()
        if not line:
            raise EOFError("The terminal closed while waiting for a rating.")
        return line.strip()

    def __call__(self, image_path: str, stage: int) -> tuple[float, str | None]:
        """Show where the image is, read a score (Enter: the default), then a comment."""
        out = self.output_stream or sys.stdout
        out.write(f"Stage {stage}: comparison image (degraded | restored | target) at {image_path}\n")
        while True:
            answer = self._ask(f"Score 1-10 [Enter = {self.default:g}]: ")
            try:
                score = check_score(float(answer)) if answer else self.default
                break
            except ValueError:
                out.write(f"{answer!r} is not a number from 1 to 10; try again.\n")
        comment = self._ask("Comment (optional, Enter to skip): ")
        return score, comment or None


class FileRater:
    """Waits for an answer file next to the comparison image.

    For ``stage_003.png`` the answer is ``stage_003.json`` in ``answer_dir`` (default: the
    image's folder), holding ``{"score": 7, "comment": "..."}`` (comment optional). The
    file is read once it exists and parses; a file that parses but holds a bad score
    raises ``ValueError``.

    Args:
        answer_dir: Folder of the answer files; None: the image's folder.
        timeout: Seconds to wait per stage, ``> 0``.
        poll: Seconds between looks.

    Raises:
        ValueError: ``timeout`` or ``poll`` not positive.
    """

    def __init__(self, answer_dir: str | Path | None = None, timeout: float = 600.0, poll: float = 0.2):
        for name, value in (("timeout", timeout), ("poll", poll)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r}. Allowed: a number of seconds > 0.")
        self.answer_dir = None if answer_dir is None else Path(answer_dir)
        self.timeout = float(timeout)
        self.poll = float(poll)

    def answer_path(self, image_path: str) -> Path:
        """Where the answer for ``image_path`` is expected."""
        image = Path(image_path)
        folder = self.answer_dir if self.answer_dir is not None else image.parent
        return folder / (image.stem + ".json")

    def __call__(self, image_path: str, stage: int) -> tuple[float, str | None]:
        """Wait for the answer file and return ``(score, comment)``.

        Raises:
            TimeoutError: No readable answer within ``timeout``; names the file.
            ValueError: The answer holds a bad score or comment.
        """
        path = self.answer_path(image_path)
        logger.info("Stage %d: waiting up to %gs for %s", stage, self.timeout, path)
        deadline = time.monotonic() + self.timeout
        while True:
            if path.is_file():
                try:
                    answer = json.loads(path.read_text())
                except json.JSONDecodeError:
                    answer = None  # being written: look again
                if answer is not None:
                    if not isinstance(answer, dict) or "score" not in answer:
                        raise ValueError(
                            f"Answer file {str(path)!r} holds {answer!r}. Allowed: "
                            '{"score": 1-10, "comment": "optional text"}.'
                        )
                    return check_score(answer["score"]), _check_comment(answer.get("comment"))
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"No rating for stage {stage} after {self.timeout:g}s: waited for {str(path)!r} "
                    '(write {"score": 1-10, "comment": "..."} there).'
                )
            time.sleep(self.poll)


class HumanObjective(Objective):
    """A person's score of every stage, from 1 to 10 (higher is better).

    Args:
        rater: ``fn(image_path: str, stage: int) -> (score, comment or None)``, e.g. a
            :class:`TerminalRater` (the default) or a :class:`FileRater`.
        out_dir: Folder of the comparison images ``stage_NNN.png``; None: a new
            temporary folder (see :attr:`out_dir`).

    Attributes:
        out_dir: Where the images go.
        history: ``(stage, score, comment)`` of every rating so far.

    Raises:
        ValueError: ``rater`` not callable.
    """

    def __init__(self, rater: Rater | None = None, out_dir: str | Path | None = None):
        super().__init__()
        rater = TerminalRater() if rater is None else rater
        if not callable(rater):
            raise ValueError(
                f"rater={rater!r} is not callable. Allowed: fn(image_path: str, stage: int) -> "
                "(score 1-10, comment or None), a TerminalRater or a FileRater."
            )
        self.rater = rater
        self.out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="lossagent-human-"))
        self.history: list[tuple[int, float, str | None]] = []
        self.metric_names = (HUMAN_METRIC,)
        self.lower_better = {HUMAN_METRIC: False}
        self.bounds = {HUMAN_METRIC: SCORE_RANGE}
        self._episode = 0
        self._last_stage = -1

    def reset(self, seed: int | None = None) -> None:
        """Count episodes, so that images of later episodes do not overwrite earlier ones."""
        self._episode += 1
        self._last_stage = -1

    def image_path(self, stage: int) -> Path:
        """Path of the comparison image of ``stage`` in the current episode."""
        folder = self.out_dir if self._episode <= 1 else self.out_dir / f"episode_{self._episode:03d}"
        return folder / f"stage_{stage:03d}.png"

    def evaluate(
        self, restored: torch.Tensor, target: torch.Tensor, *, degraded: torch.Tensor | None = None,
        stage: int = 0, weights: dict[str, float] | None = None,
    ) -> ObjectiveResult:
        """Save the comparison image of the first image (``stage`` and ``weights``
        written on it), ask the rater, return its score and comment.

        Raises:
            ValueError: The rater returned a bad score or comment.
        """
        # Stage labels strictly increase within an episode (0 after reset), so no rated
        # image is overwritten even if the caller passes the same stage index twice. The
        # label is taken only once the rating is in: a stage whose rater raised (a
        # FileRater's timeout) is asked again under the same name when retried.
        stage = max(int(stage), self._last_stage + 1)
        path = self.image_path(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        shown = ", ".join(f"{k}={v:.3g}" for k, v in (weights or {}).items()) or "none"
        caption = f"stage {stage}   degraded | restored | target\nweights: {shown}"
        comparison_image(restored[0], target[0], None if degraded is None else degraded[0], caption).save(path)
        answer = self.rater(str(path), stage)
        if not isinstance(answer, tuple) or len(answer) != 2:
            raise ValueError(f"The rater returned {answer!r}. Allowed: a tuple (score 1-10, comment or None).")
        score, comment = check_score(answer[0]), _check_comment(answer[1])
        self._last_stage = stage
        self.history.append((stage, score, comment))
        logger.info("Stage %d rated %g%s", stage, score, f": {comment}" if comment else "")
        return ObjectiveResult(metrics={HUMAN_METRIC: score}, value=score, feedback=comment)

    def describe(self) -> str:
        return (
            "The objective J is a person's score, 1 to 10 (higher is better), of a comparison image "
            "(degraded | restored | target) shown after every stage; the person's comments come back "
            "as feedback. The reward of a stage is the change of J."
        )

    def __repr__(self) -> str:
        return f"HumanObjective(rater={self.rater!r}, out_dir={str(self.out_dir)!r})"
