"""What the caller and its server process tell each other at start-up.

The caller binds the listening socket itself and hands it to the server process, so no
other program can take the port between the choice of a port and the server's first
answer. It writes one JSON line on the server's stdin (:class:`Handshake`): a random
token that only the two of them know, its own pid, the server's folder, the socket's
file descriptor and the patches to apply. The server answers ``GET``
:data:`READY_PATH` ``?challenge=C`` with ``{"proof": proof(token, C), "patches": ...}``
once it serves; the caller accepts as ready only an answer whose proof matches a fresh
challenge, so a start never reports another program as its server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass

__all__ = ["READY_PATH", "Handshake", "proof"]

READY_PATH = "/lossagent/ready"
"""The server's readiness route."""


def proof(token: str, challenge: str) -> str:
    """HMAC-SHA256 of ``challenge`` under ``token``, in hex: what only a holder of the token can give."""
    return hmac.new(token.encode("utf-8"), challenge.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Handshake:
    """The caller's start-up message to its server process (one JSON line on its stdin).

    Attributes:
        token: The shared secret of :func:`proof` (never logged).
        parent: The caller's pid; the server exits when it is no longer its parent.
        folder: The server's temporary folder (its log), removed by whichever of the two ends last.
        fd: The listening socket the caller bound, inherited by the server.
        patches: Names of the llama-cpp-python patches to apply.
    """

    token: str
    parent: int
    folder: str
    fd: int
    patches: tuple[str, ...] = ()

    def line(self) -> bytes:
        """The message as one line of JSON."""
        return (json.dumps(asdict(self)) + "\n").encode("utf-8")

    @classmethod
    def read(cls, line: bytes | str) -> Handshake:
        """The message from its line.

        Raises:
            ValueError: Not a handshake line.
        """
        try:
            data = json.loads(line)
            return cls(
                token=str(data["token"]), parent=int(data["parent"]), folder=str(data["folder"]),
                fd=int(data["fd"]), patches=tuple(str(p) for p in data["patches"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a start-up message from LocalLLMServer: {e}") from e

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"Handshake(parent={self.parent}, folder={self.folder!r}, fd={self.fd}, patches={self.patches})"
