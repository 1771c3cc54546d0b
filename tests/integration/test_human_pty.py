"""TerminalRater in a real pseudo-terminal: a subprocess asks, the test types.

The child runs a HumanObjective with a TerminalRater on a pty (stdlib ``os.openpty``);
the test reads the screen, types a bad score (asked again), a good score and a comment,
then just Enter (the default score) and no comment, and checks what the objective got.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys
import torch
from lossagent_env.objectives.human import HumanObjective, TerminalRater

assert sys.stdin.isatty() and sys.stdout.isatty(), "not on a terminal"
objective = HumanObjective(rater=TerminalRater(default=5), out_dir=sys.argv[1])
target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
results = [objective.evaluate(target.flip(-1), target, stage=s, weights={"l1": 0.5}) for s in (0, 1)]
print("RESULT " + json.dumps([[r.value, r.feedback] for r in results]), flush=True)
"""

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="pseudo-terminals are POSIX"
)


class Terminal:
    """The master side of a pty with a child process on the slave side."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self.screen = ""
        self.position = (
            0  # end of the last match: the next pattern is searched after it
        )

    def expect(self, pattern: str, timeout: float = 60.0) -> str:
        """Read until ``pattern`` (a regex) appears after what was already matched."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.screen, self.position)
            if match:
                self.position = match.end()
                return match.group(0)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{pattern!r} did not appear; screen:\n{self.screen}"
                )
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(
                        f"{pattern!r} did not appear before EOF; screen:\n{self.screen}"
                    )
                self.screen += chunk.decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        os.close(self.master)


def test_terminal_rater_on_a_real_pty(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    terminal = Terminal([sys.executable, "-c", CHILD, str(tmp_path)], env)
    try:
        terminal.expect(r"Stage 0: comparison image .* at \S+stage_000\.png")
        terminal.expect(r"Score 1-10 \[Enter = 5\]: ")
        terminal.type("eleven\r")
        terminal.expect(r"'eleven' is not a number from 1 to 10; try again\.")
        terminal.expect(r"Score 1-10 \[Enter = 5\]: ")
        terminal.type("7\r")
        terminal.expect(r"Comment \(optional, Enter to skip\): ")
        terminal.type("fur  still soft\r")
        terminal.expect(r"Stage 1: comparison image")
        terminal.expect(r"Score 1-10 \[Enter = 5\]: ")
        terminal.type("\r")
        terminal.expect(r"Comment \(optional, Enter to skip\): ")
        terminal.type("\r")
        line = terminal.expect(r"RESULT .*\]\]")
        assert terminal.process.wait(timeout=30) == 0
    finally:
        terminal.close()
    assert json.loads(line[len("RESULT ") :]) == [[7.0, "fur still soft"], [5.0, None]]
    assert (tmp_path / "stage_000.png").is_file() and (
        tmp_path / "stage_001.png"
    ).is_file()
