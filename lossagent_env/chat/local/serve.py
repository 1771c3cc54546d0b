"""The embedded model's server process: ``python -m lossagent_env.chat.local.serve ARGS``.

:class:`~lossagent_env.chat.local.server.LocalLLMServer` starts it with the command-line
arguments of ``python -m llama_cpp.server`` and a
:class:`~lossagent_env.chat.local.handshake.Handshake` on stdin; it is not meant to be
started by hand. In order, it:

1. reads the handshake and watches its parent (:func:`~.lifetime.watch_parent`);
2. applies the llama-cpp-python patches the handshake names, each only where it can
   (:mod:`~lossagent_env.chat.local.patches`);
3. builds llama-cpp-python's own server app from the arguments, as ``python -m
   llama_cpp.server`` does (this loads the model), and adds the readiness route, which
   proves the token and reports the patches (:mod:`~.handshake`);
4. serves on the socket its parent bound.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

from lossagent_env.chat.local.handshake import READY_PATH, Handshake, proof
from lossagent_env.chat.local.lifetime import watch_parent
from lossagent_env.chat.local.patches import apply_patches, installed_version

__all__ = ["main"]

logger = logging.getLogger("lossagent_env.chat.local.serve")


def _app(argv: Sequence[str] | None) -> tuple[Any, Any]:
    """llama-cpp-python's server app and its server settings, from ``argv`` as
    ``python -m llama_cpp.server`` reads them (the model is loaded here)."""
    from llama_cpp.server.app import create_app
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    parser = argparse.ArgumentParser(prog="python -m lossagent_env.chat.local.serve")
    add_args_from_model(parser, Settings)
    args = parser.parse_args(argv)
    # (typed as returning its first argument, the class; it returns an instance)
    server_settings: Any = parse_model_from_args(ServerSettings, args)
    model_settings: list[Any] = [parse_model_from_args(ModelSettings, args)]
    return create_app(server_settings=server_settings, model_settings=model_settings), server_settings


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server (see the module docstring) until it is stopped or its parent is gone."""
    handler = logging.StreamHandler(sys.stderr)  # into the server's log; other loggers are left as they are
    handler.setFormatter(logging.Formatter("lossagent: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    handshake = Handshake.read(sys.stdin.buffer.readline())
    watch_parent(handshake.parent, handshake.folder)
    outcome = apply_patches(handshake.patches)
    for name, why in outcome.items():
        if why is not None:
            logger.warning("patch %s not applied, llama-cpp-python's own code kept: %s", name, why)
    app, settings = _app(argv)
    token, version = handshake.token, installed_version()

    def ready(challenge: str) -> dict[str, Any]:
        return {"proof": proof(token, challenge), "patches": outcome, "llama_cpp": version}

    app.add_api_route(READY_PATH, ready, methods=["GET"])
    import uvicorn

    listener = socket.socket(fileno=handshake.fd)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, ssl_keyfile=settings.ssl_keyfile,
        ssl_certfile=settings.ssl_certfile,
    )
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
